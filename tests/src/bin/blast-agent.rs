//! A stand-in agent for serve tests: dials `AEGIS_TETHER`, writes `BENCH_BLAST` egress
//! frames as fast as it can (seqs are stamped by the host), then idles.

fn main() {
    aegis_e2e::bench::maybe_blast();
    eprintln!("blast-agent: set BENCH_BLAST=N");
    std::process::exit(2);
}

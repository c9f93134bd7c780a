fn main() {
    println!("aegis-agent: not yet implemented");
}

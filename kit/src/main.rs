fn main() {
    println!("aegis-kit: not yet implemented");
}

fn main() {
    println!("aegis-gateway: not yet implemented");
}

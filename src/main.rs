//! The `parc` binary: parses arguments, sets up logging, calls the libraries.

fn main() {
    println!("parc");
}

//! The `turnstile` command line.
fn main() {
    println!("turnstile: nothing to compare yet");
}

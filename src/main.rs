fn main() {
    println!("nanodist: under construction");
}

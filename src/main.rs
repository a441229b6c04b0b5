fn main() {
    print!("{}", drover::crd::to_yaml().unwrap());
}

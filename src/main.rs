fn main() { println!("{}", fulcrum::version::long_version()); }

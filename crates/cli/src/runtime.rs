//! stub
pub fn run(_argv: Vec<String>) -> i32 {
    1
}

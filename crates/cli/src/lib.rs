//! The `pm2` command line.

pub fn main_pm2() -> i32 {
    0
}

pub fn main_runtime() -> i32 {
    0
}

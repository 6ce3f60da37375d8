fn main() {
    std::process::exit(corral_cli::main_runtime());
}

//! `weft-shim monitor DIR`: the container monitor as a standalone binary (weftd and weft-bench
//! serve the same verb from their own executables).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    weft_runtime::container::monitor::shim_main(&args)
}

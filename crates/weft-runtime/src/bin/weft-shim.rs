//! `weft-shim monitor DIR`: detaches from its caller (so weftd can exit and restart freely) and
//! runs the per-container monitor for the container in DIR.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [verb, dir] = args.as_slice() else {
        eprintln!("usage: weft-shim monitor <container-dir>");
        std::process::exit(2);
    };
    if verb != "monitor" {
        eprintln!("weft-shim: unknown verb {verb:?}; usage: weft-shim monitor <container-dir>");
        std::process::exit(2);
    }
    // SAFETY: single-threaded at this point; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("weft-shim: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        0 => {
            // SAFETY: a new session so no terminal or process group of the caller reaches us.
            unsafe { libc::setsid() };
            std::process::exit(weft_runtime::container::monitor::run(std::path::Path::new(dir)));
        }
        _ => std::process::exit(0),
    }
}

//! `cargo run --release -p weft-bench -- <suite>`: runs one benchmark suite and prints its figures
//! as JSON lines.

use anyhow::{Result, bail};

const SUITES: &[(&str, &str)] = &[
    ("state", "apply() throughput for endpoint allocation at 1k, 100k and 1M endpoints"),
    ("overlay", "TCP throughput and latency across the overlay vs the underlay"),
    ("convergence", "time for 100 hosts' reconcilers to apply a state change"),
    ("runtime", "container lifecycle: weft vs crun and runc"),
    ("raft", "committed allocations/s, latency and failover: weft's raft vs a 3-member etcd"),
    ("names", "a container started on one host resolvable on another, vs an etcd watch"),
    (
        "scale",
        "whole agents on 10 to 200 hosts: a new container resolvable and pingable everywhere, RSS and CPU",
    ),
];

fn usage() -> String {
    let mut text = String::from("usage: weft-bench <suite>\n\nsuites:\n");
    for (name, what) in SUITES {
        text.push_str(&format!("  {name:<12} {what}\n"));
    }
    text
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let monitor = matches!(args.first().map(String::as_str), Some("monitor" | "exec"));
    if !monitor {
        // Ctrl-C never unwinds: what the suite made (namespaces, agents, containers, temp dirs)
        // is swept by name instead of left behind.
        weft_tests::interrupt::sweep_on_signal()?;
    }
    let figures = match args.first().map(String::as_str) {
        Some("state") => weft_bench::state::run(),
        Some("overlay") => weft_bench::overlay::run(),
        Some("convergence") => weft_bench::convergence::run(),
        Some("runtime") => weft_bench::runtime::run()?,
        Some("raft") => weft_bench::raft::run()?,
        Some("names") => weft_bench::names::run()?,
        Some("scale") => weft_bench::scale::run()?,
        // weft-bench is also the container monitor of the weft containers it measures.
        Some("monitor" | "exec") => weft_runtime::container::monitor::shim_main(&args),
        Some("-h" | "--help") | None => {
            print!("{}", usage());
            return Ok(());
        }
        Some(other) => bail!("unknown suite {other:?}\n\n{}", usage()),
    };
    for figure in figures {
        figure.print();
    }
    Ok(())
}

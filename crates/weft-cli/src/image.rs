//! `weft image`: import, build (the context streamed as a tar), export, ls, inspect, rm, tag.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use tokio_stream::StreamExt;
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::output::{Format, json, print_table, short};
use crate::rpc::{Api, err};

/// `weft image ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Imports an OCI image layout or docker-save archive (a tar file, or - for stdin).
    Import {
        /// Name to give the image (NAME[:TAG]).
        #[arg(short = 't', long)]
        tag: Option<String>,
        /// The archive, or - for stdin.
        file: String,
    },
    /// Writes an image as a tar archive (docker-save or OCI layout).
    Export {
        /// docker or oci.
        #[arg(long, default_value = "docker")]
        format: String,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The image.
        image: String,
    },
    /// Lists images.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Shows images (JSON).
    Inspect {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Shows how an image was made, newest step first (as `docker history`).
    History {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Show whole instructions instead of cutting them at 45 characters.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// The image.
        image: String,
    },
    /// Removes images (refused while containers use them).
    Rm {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Builds an image from a Dockerfile and a context directory.
    Build {
        /// Name for the image (NAME[:TAG]); may be given more than once.
        #[arg(short = 't', long = "tag")]
        tags: Vec<String>,
        /// The Dockerfile, relative to the context (default: Dockerfile).
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        /// Build argument KEY=VALUE.
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// Stop at this stage.
        #[arg(long)]
        target: Option<String>,
        /// Do not use the layer cache.
        #[arg(long)]
        no_cache: bool,
        /// The context directory.
        context: PathBuf,
    },
    /// Adds a name to an image.
    Tag {
        /// The image.
        image: String,
        /// The new name.
        name: String,
    },
}

/// One image as `image ls --format json` and `image inspect` print it.
fn image_json(i: &pb::ImageInfo) -> serde_json::Value {
    serde_json::json!({
        "id": i.id, "names": i.names, "created": i.created, "layers": i.layers,
        "config": serde_json::from_str::<serde_json::Value>(&i.config_json).unwrap_or_default(),
    })
}

/// One history step as `image history --format json` prints it.
fn history_json(h: &pb::ImageHistoryEntry) -> serde_json::Value {
    serde_json::json!({
        "created": h.created, "created_by": h.created_by, "comment": h.comment,
        "empty_layer": h.empty_layer, "size": h.size,
    })
}

/// `text` cut to `max` characters, marked with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Bytes as Docker prints sizes (`0B`, `1.5kB`, `4.2MB`: powers of 1000).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    // Three significant digits, as Docker's HumanSize.
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    format!("{text}{}", UNITS[unit])
}

/// Runs an `image` verb.
pub(crate) async fn image(api: &mut Api, command: ImageCommand) -> Result<u8, Failure> {
    match command {
        ImageCommand::Import { tag, file } => {
            let mut reader: Box<dyn Read + Send> = if file == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(&file).map_err(|e| format!("cannot read {file}: {e}"))?)
            };
            let total = if file == "-" { None } else { std::fs::metadata(&file).ok().map(|m| m.len()) };
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportChunk>(4);
            let name = tag.unwrap_or_default();
            let progress = std::io::stderr().is_terminal();
            let sender = tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let mut sent = 0u64;
                let mut first = true;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = reader.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                    if n == 0 && !first {
                        return Ok(sent);
                    }
                    let chunk = pb::ImportChunk {
                        name: if first { name.clone() } else { String::new() },
                        data: buf[..n].to_vec(),
                    };
                    first = false;
                    sent += n as u64;
                    if tx.blocking_send(chunk).is_err() {
                        return Ok(sent);
                    }
                    if progress {
                        match total {
                            Some(t) => eprint!("\rimporting: {} / {} MiB", sent >> 20, t >> 20),
                            None => eprint!("\rimporting: {} MiB", sent >> 20),
                        }
                    }
                    if n == 0 {
                        return Ok(sent);
                    }
                }
            });
            let result = api.import_image(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
            let sent = sender.await.map_err(|e| e.to_string())??;
            if progress {
                eprintln!();
            }
            let response = result.map_err(err)?.into_inner();
            for i in &response.images {
                println!("imported {} ({} bytes read) {}", short(&i.id), sent, i.names.join(" "));
            }
        }
        ImageCommand::Export { format, output, image } => {
            let mut stream = api
                .export_image(pb::ExportRequest { reference: image, format })
                .await
                .map_err(err)?
                .into_inner();
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                ),
                None if std::io::stdout().is_terminal() => {
                    return Err(
                        "refusing to write an image to a terminal: use -o FILE or redirect stdout".into()
                    );
                }
                None => Box::new(std::io::stdout()),
            };
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk.map_err(err)?.data).map_err(|e| format!("write: {e}"))?;
            }
            out.flush().map_err(|e| format!("write: {e}"))?;
        }
        ImageCommand::Ls { format } => {
            let list = api.list_images(pb::Empty {}).await.map_err(err)?.into_inner();
            if format == Format::Json {
                json(&list.images.iter().map(image_json).collect::<Vec<_>>());
                return Ok(0);
            }
            let mut rows = Vec::new();
            for i in &list.images {
                let names = if i.names.is_empty() { vec!["<none>".to_string()] } else { i.names.clone() };
                for n in names {
                    rows.push(vec![n, short(&i.id), i.layers.to_string(), i.created.clone()]);
                }
            }
            print_table(&["NAME", "ID", "LAYERS", "CREATED"], rows);
        }
        ImageCommand::Inspect { images } => {
            let mut out = Vec::new();
            for reference in images {
                out.push(image_json(
                    &api.inspect_image(pb::ImageRef { reference }).await.map_err(err)?.into_inner(),
                ));
            }
            json(&out);
        }
        ImageCommand::History { format, no_trunc, image } => {
            let info = api.inspect_image(pb::ImageRef { reference: image }).await.map_err(err)?.into_inner();
            let newest_first: Vec<&pb::ImageHistoryEntry> = info.history.iter().rev().collect();
            if format == Format::Json {
                json(&newest_first.iter().map(|h| history_json(h)).collect::<Vec<_>>());
            } else {
                let rows = newest_first
                    .iter()
                    .map(|h| {
                        let by = if no_trunc { h.created_by.clone() } else { cut(&h.created_by, 45) };
                        let created =
                            if h.created.is_empty() { "<missing>".to_string() } else { h.created.clone() };
                        vec![created, by, human_size(h.size), h.comment.clone()]
                    })
                    .collect();
                print_table(&["CREATED", "CREATED BY", "SIZE", "COMMENT"], rows);
            }
        }
        ImageCommand::Rm { images } => {
            for reference in images {
                api.remove_image(pb::ImageRef { reference: reference.clone() }).await.map_err(err)?;
                println!("{reference}");
            }
        }
        ImageCommand::Build { tags, file, build_args, target, no_cache, context } => {
            if !context.is_dir() {
                return Err(format!("build context {} is not a directory", context.display()).into());
            }
            // The context travels as a tar, streamed in 1 MiB chunks; the first carries the options.
            let mut archive = tar::Builder::new(Vec::new());
            archive.follow_symlinks(false);
            archive
                .append_dir_all(".", &context)
                .map_err(|e| format!("cannot read the build context {}: {e}", context.display()))?;
            let bytes = archive.into_inner().map_err(|e| format!("build context: {e}"))?;
            let mut chunks: Vec<pb::BuildChunk> = bytes
                .chunks(1 << 20)
                .map(|c| pb::BuildChunk { context: c.to_vec(), ..Default::default() })
                .collect();
            if chunks.is_empty() {
                chunks.push(pb::BuildChunk::default());
            }
            chunks[0].tags = tags;
            chunks[0].dockerfile = file.unwrap_or_default();
            chunks[0].build_args = build_args;
            chunks[0].target = target.unwrap_or_default();
            chunks[0].no_cache = no_cache;
            let report = api.build_image(tokio_stream::iter(chunks)).await.map_err(err)?.into_inner();
            for step in &report.steps {
                let cached = if step.cached { " (cached)" } else { "" };
                println!("stage {} line {}: {}{cached}", step.stage, step.line, step.text);
            }
            let image = report.image.unwrap_or_default();
            println!("built {} {}", short(&image.id), image.names.join(" "));
        }
        ImageCommand::Tag { image, name } => {
            api.tag_image(pb::TagRequest { reference: image, name }).await.map_err(err)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::Command;
    use crate::tests::{command, refusal};

    fn verb(line: &[&str]) -> ImageCommand {
        match command(line) {
            Command::Image(c) => c,
            other => panic!("not an image verb: {other:?}"),
        }
    }

    #[test]
    fn image_build_takes_its_flags() {
        let line = ["image", "build", "-t", "a", "--tag", "b:1", "-f", "Dockerfile.x", "--build-arg", "X=1"];
        let line = [&line[..], &["--target", "t", "--no-cache", "ctx"]].concat();
        let ImageCommand::Build { tags, file, build_args, target, no_cache, context } = verb(&line) else {
            panic!("not build");
        };
        assert_eq!(tags, ["a", "b:1"]);
        assert_eq!(file.as_deref(), Some("Dockerfile.x"));
        assert_eq!(build_args, ["X=1"]);
        assert_eq!(target.as_deref(), Some("t"));
        assert!(no_cache);
        assert_eq!(context, PathBuf::from("ctx"));
        let ImageCommand::Build { tags, file, no_cache, .. } = verb(&["image", "build", "."]) else {
            panic!("not build");
        };
        assert!(tags.is_empty() && file.is_none() && !no_cache);
        assert_eq!(refusal(&["image", "build"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn the_other_image_verbs_parse() {
        assert!(matches!(
            verb(&["image", "import", "-t", "a:1", "-"]),
            ImageCommand::Import { tag: Some(t), file } if t == "a:1" && file == "-"
        ));
        assert!(matches!(verb(&["image", "import", "x.tar"]), ImageCommand::Import { tag: None, .. }));
        let ImageCommand::Export { format, output, image } = verb(&["image", "export", "img"]) else {
            panic!("not export");
        };
        assert_eq!((format.as_str(), output, image.as_str()), ("docker", None, "img"));
        assert!(matches!(
            verb(&["image", "export", "--format", "oci", "-o", "out.tar", "img"]),
            ImageCommand::Export { format, output: Some(o), .. } if format == "oci" && o == std::path::Path::new("out.tar")
        ));
        assert!(matches!(verb(&["image", "list"]), ImageCommand::Ls { format: Format::Table }));
        assert!(matches!(
            verb(&["image", "ls", "--format", "json"]),
            ImageCommand::Ls { format: Format::Json }
        ));
        assert!(matches!(
            verb(&["image", "inspect", "a", "b"]),
            ImageCommand::Inspect { images } if images.len() == 2
        ));
        assert!(matches!(verb(&["image", "rm", "a"]), ImageCommand::Rm { images } if images == ["a"]));
        assert!(matches!(
            verb(&["image", "tag", "a", "b:2"]),
            ImageCommand::Tag { image, name } if image == "a" && name == "b:2"
        ));
        assert!(matches!(
            verb(&["image", "history", "--no-trunc", "a"]),
            ImageCommand::History { format: Format::Table, no_trunc: true, image } if image == "a"
        ));
        assert_eq!(refusal(&["image", "history"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["image", "tag", "a"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["image", "import"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn an_image_in_json_carries_its_config_parsed() {
        let info = pb::ImageInfo {
            id: "sha256:0123".into(),
            names: vec!["busybox:latest".into()],
            created: "2024-01-01T00:00:00Z".into(),
            layers: 1,
            config_json: r#"{"Cmd":["sh"]}"#.into(),
            history: vec![],
        };
        let json = image_json(&info);
        assert_eq!(json["id"], "sha256:0123");
        assert_eq!(json["names"], serde_json::json!(["busybox:latest"]));
        assert_eq!(json["layers"], 1);
        assert_eq!(json["config"]["Cmd"], serde_json::json!(["sh"]));
        let broken = pb::ImageInfo { config_json: "{".into(), ..info };
        assert_eq!(image_json(&broken)["config"], serde_json::Value::Null);
    }

    #[test]
    fn sizes_and_cuts_as_docker_prints_them() {
        for (bytes, want) in [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (1536, "1.54kB"),
            (12_345_678, "12.3MB"),
            (123_456_789, "123MB"),
        ] {
            assert_eq!(human_size(bytes), want, "{bytes}");
        }
        assert_eq!(cut("COPY hello.py .", 45), "COPY hello.py .");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}

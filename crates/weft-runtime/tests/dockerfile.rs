//! The Dockerfile parser: every form it accepts, every error it reports (with its line), and a
//! fuzz of arbitrary input that must never panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use weft_runtime::build::dockerfile::{Command, Instruction, parse};

fn ok(text: &str) -> weft_runtime::build::dockerfile::Dockerfile {
    parse(text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn fails(text: &str) -> (usize, String) {
    let e = parse(text, &BTreeMap::new()).expect_err("should fail");
    (e.line, e.message)
}

#[test]
fn forms_continuations_comments_and_substitution() {
    let df = ok(r#"
# a comment
ARG BASE=busybox
ARG TAG
FROM ${BASE}:${TAG:-latest} AS build
ENV APP=/app \
    MODE="fast mode"
# comment inside the file
RUN echo building \
    # comment inside a continued line
    && echo $APP
WORKDIR $APP/src
COPY --chown=1:1 a.txt b.txt ${APP}/
RUN ["sh", "-c", "echo exec form"]
LABEL version="1.0" description='two words'
EXPOSE 80 53/udp
USER ${NOBODY:-nobody}

FROM scratch
COPY --from=build /app /app
CMD ["/app/run"]
ENTRYPOINT /bin/sh -c
VOLUME ["/data"]
STOPSIGNAL SIGINT
"#);
    assert_eq!(df.stages.len(), 2);
    let build = &df.stages[0];
    assert_eq!(build.base, "busybox:latest");
    assert_eq!(build.name.as_deref(), Some("build"));
    assert_eq!(build.line, 5);
    let i: Vec<&Instruction> = build.steps.iter().map(|s| &s.instruction).collect();
    assert_eq!(
        i[0],
        &Instruction::Env(vec![("APP".into(), "/app".into()), ("MODE".into(), "fast mode".into())])
    );
    assert_eq!(i[1], &Instruction::Run(Command::Shell("echo building     && echo $APP".into())));
    assert_eq!(build.steps[1].line, 9);
    assert_eq!(i[2], &Instruction::Workdir("/app/src".into()));
    assert_eq!(
        i[3],
        &Instruction::Copy {
            from: None,
            chown: Some("1:1".into()),
            chmod: None,
            sources: vec!["a.txt".into(), "b.txt".into()],
            dest: "/app/".into()
        }
    );
    assert_eq!(
        i[4],
        &Instruction::Run(Command::Exec(vec!["sh".into(), "-c".into(), "echo exec form".into()]))
    );
    assert_eq!(
        i[5],
        &Instruction::Label(vec![
            ("version".into(), "1.0".into()),
            ("description".into(), "two words".into())
        ])
    );
    assert_eq!(i[6], &Instruction::Expose(vec!["80/tcp".into(), "53/udp".into()]));
    assert_eq!(i[7], &Instruction::User("nobody".into()));
    let last = &df.stages[1];
    assert_eq!(last.base, "scratch");
    assert_eq!(
        last.steps[0].instruction,
        Instruction::Copy {
            from: Some("build".into()),
            chown: None,
            chmod: None,
            sources: vec!["/app".into()],
            dest: "/app".into()
        }
    );
    assert_eq!(last.steps[1].instruction, Instruction::Cmd(Command::Exec(vec!["/app/run".into()])));
    assert_eq!(last.steps[2].instruction, Instruction::Entrypoint(Command::Shell("/bin/sh -c".into())));
    assert_eq!(df.stage_index("BUILD"), Some(0));
    assert_eq!(df.stage_index("1"), Some(1));
}

#[test]
fn escape_directive_build_args_and_arg_scoping() {
    let text = "# escape=`\nARG V=1\nFROM busybox\nARG V\nENV A=$V B=`$V\nRUN dir c:\\ `\n  && echo done\n";
    let df = ok(text);
    let steps = &df.stages[0].steps;
    assert_eq!(steps[0].instruction, Instruction::Arg("V".into(), Some("1".into())));
    assert_eq!(
        steps[1].instruction,
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "$V".into())])
    );
    assert_eq!(steps[2].instruction, Instruction::Run(Command::Shell("dir c:\\   && echo done".into())));
    let args = BTreeMap::from([("V".to_string(), "2".to_string())]);
    let df = parse(text, &args).unwrap();
    assert_eq!(
        df.stages[0].steps[1].instruction,
        Instruction::Env(vec![("A".into(), "2".into()), ("B".into(), "$V".into())])
    );
    // A stage that does not re-declare a global ARG does not see it.
    let df = ok("ARG G=x\nFROM busybox\nENV E=${G:-unset}\n");
    assert_eq!(df.stages[0].steps[0].instruction, Instruction::Env(vec![("E".into(), "unset".into())]));
    // Legacy ENV form.
    let df = ok("FROM busybox\nENV PATH /usr/bin:/bin\n");
    assert_eq!(
        df.stages[0].steps[0].instruction,
        Instruction::Env(vec![("PATH".into(), "/usr/bin:/bin".into())])
    );
}

/// Docker: what does not parse as a JSON array of strings is the shell form.
#[test]
fn broken_json_is_the_shell_form() {
    let df = ok("FROM busybox\nCMD [\"/bin/sh\", \"-c\"\nRUN [\"a\", 1]\nCMD ['/bin/echo', 'x']\n");
    let i: Vec<&Instruction> = df.stages[0].steps.iter().map(|s| &s.instruction).collect();
    assert_eq!(i[0], &Instruction::Cmd(Command::Shell("[\"/bin/sh\", \"-c\"".into())));
    assert_eq!(i[1], &Instruction::Run(Command::Shell("[\"a\", 1]".into())));
    assert_eq!(i[2], &Instruction::Cmd(Command::Shell("['/bin/echo', 'x']".into())));
}

#[test]
fn malformed_dockerfiles_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("FROM busybox\nFROB x\n", 2, "unknown instruction: FROB"),
        ("RUN echo\nFROM busybox\n", 1, "before the first FROM"),
        ("# nothing\n", 1, "no FROM"),
        ("FROM busybox\n\nCOPY onlyone\n", 3, "source and a destination"),
        ("FROM busybox\nEXPOSE 99999\n", 2, "invalid port"),
        ("FROM busybox\nENV A=\"open\n", 2, "unterminated quote"),
        ("FROM busybox\nWORKDIR ${X\n", 2, "missing '}'"),
        ("FROM a AS x\nFROM b AS X\n", 2, "duplicate stage"),
        ("FROM busybox\nADD --from=x a b\n", 2, "--from"),
        ("FROM busybox\nCOPY --chmod=9 a b\n", 2, "octal mode"),
        ("FROM busybox\nCOPY --bogus=1 a b\n", 2, "unsupported COPY flag"),
        ("# escape=x\nFROM busybox\n", 1, "invalid escape"),
        ("FROM busybox\nONBUILD ONBUILD RUN x\n", 2, "isn't allowed"),
        ("FROM busybox\nONBUILD FROM x\n", 2, "isn't allowed"),
        ("FROM busybox\nONBUILD\n", 2, "needs an instruction"),
        ("FROM busybox\nRUN --mount=type=cache,target=/x true\n", 2, "RUN --mount is not supported"),
        ("FROM busybox\nCOPY --link a b\n", 2, "unsupported COPY flag"),
        ("FROM busybox\nEXPOSE 90-80\n", 2, "invalid port"),
        ("FROM busybox\nRUN\n", 2, "needs a command"),
    ];
    for (text, line, want) in cases {
        let (got_line, message) = fails(text);
        assert_eq!(got_line, *line, "{text:?}: {message}");
        assert!(message.contains(want), "{text:?}: {message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text, &BTreeMap::new());
    }

    /// Text built from Dockerfile-ish pieces never panics either.
    #[test]
    fn dockerfile_shaped_text_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("FROM busybox AS b\n".to_string()), Just("FROM ${X:-a}\n".to_string()), Just("ARG X=1\n".to_string()),
        Just("RUN [\"a\"\n".to_string()), Just("RUN echo \\\n".to_string()), Just("COPY --from=b / /\n".to_string()),
        Just("ENV a=\"b c\" d=e\n".to_string()), Just("# escape=`\n".to_string()), Just("${\n".to_string()),
        Just("LABEL 'x\n".to_string()), Just("EXPOSE 80/udp\n".to_string()), "[A-Z]{2,10} [ -~]{0,30}\n",
    ], 0..30)) {
        let _ = parse(&parts.concat(), &BTreeMap::new());
    }
}

#[test]
fn healthcheck_options_and_forms() {
    use weft_runtime::build::dockerfile::HealthcheckSpec;
    let df = ok(
        "FROM scratch\nHEALTHCHECK --interval=5s --timeout=3s --start-period=1m30s --retries=4 CMD wget -q localhost || exit 1\nHEALTHCHECK CMD [\"/bin/check\", \"-v\"]\nHEALTHCHECK NONE\n",
    );
    let checks: Vec<&HealthcheckSpec> = df.stages[0]
        .steps
        .iter()
        .map(|s| match &s.instruction {
            Instruction::Healthcheck(h) => h,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        *checks[0],
        HealthcheckSpec {
            test: vec!["CMD-SHELL".into(), "wget -q localhost || exit 1".into()],
            interval: Some(5_000_000_000),
            timeout: Some(3_000_000_000),
            start_period: Some(90_000_000_000),
            start_interval: None,
            retries: Some(4),
        }
    );
    assert_eq!(checks[1].test, ["CMD", "/bin/check", "-v"]);
    assert_eq!(checks[2].test, ["NONE"]);
    for (bad, why) in [
        ("HEALTHCHECK --interval=5 CMD true", "missing unit"),
        ("HEALTHCHECK --bogus=1s CMD true", "unknown option"),
        ("HEALTHCHECK --retries=x CMD true", "expected a number"),
        ("HEALTHCHECK true", "NONE or CMD"),
        ("HEALTHCHECK NONE x", "no arguments"),
        ("HEALTHCHECK CMD", "needs a command"),
    ] {
        let (line, message) = fails(&format!("FROM scratch\n{bad}\n"));
        assert_eq!(line, 2, "{bad}");
        assert!(message.contains(why), "{bad}: {message}");
    }
}

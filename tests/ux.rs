//! What a `qemu-img` user trips over (issue 29): messages about the value given, notes on what
//! `create` did that the options did not say, `.hdd` names and bundle recipes, batch lines and
//! corpus folders.

use std::fs;

#[path = "fixtures/readme.rs"]
mod readme;
#[path = "fixtures/cli.rs"]
mod runner;
use runner::*;

/// A usage error of clap for `--OPTION VALUE`: exit 1, its own message about the value.
fn usage_error(args: &[&str], expected: &str) {
    let out = prlimg(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert_eq!(stderr(&out), expected, "{args:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn negative_numbers_get_a_message_about_the_value() {
    let dir = tmp();
    let out = dir.path().join("x.hds");
    usage_error(
        &["create", s(&out), "--size", "-1G"],
        "error: invalid value '-1G' for '--size <SIZE>': size \"-1G\" is negative (a size is a number of bytes, 0 or more)\n\n\
         For more information, try '--help'.\n",
    );
    usage_error(
        &["create", s(&out), "--size", "1M", "--random-bitmap", "-0.5"],
        "error: invalid value '-0.5' for '--random-bitmap <DENSITY>': invalid density \"-0.5\" (expected a number from 0.0 to 1.0)\n\n\
         For more information, try '--help'.\n",
    );
    usage_error(
        &["create", s(&out), "--size", "1M", "--data", "-1:1:1"],
        "error: invalid value '-1:1:1' for '--data <OFFSET:LEN:BYTE>': size \"-1\" is negative (a size is a number of bytes, 0 or more)\n\n\
         For more information, try '--help'.\n",
    );
    assert!(!out.exists());
}

#[test]
fn create_says_what_it_rounded_and_which_data_overlap() {
    let dir = tmp();
    let one = dir.path().join("one.hds");
    let out = prlimg_ok(&["create", s(&one), "--size", "1"]);
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: note: --size 1 rounded up to 512 bytes (whole 512-byte sectors, as qemu-img does)\n",
            s(&one)
        )
    );
    let info = json_of(&prlimg_ok(&["info", "--output", "json", s(&one)]));
    assert_eq!(info["virtual_size"], 512, "{info}");
    let two = dir.path().join("two.hds");
    let out = prlimg_ok(&[
        "create",
        s(&two),
        "--size",
        "4M",
        "--data",
        "0:1M:0xaa",
        "--data",
        "512K:1M:1",
    ]);
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: note: --data 524288:1048576:0x01 overlaps --data 0:1048576:0xaa; the later one wins where they overlap\n",
            s(&two)
        )
    );
    // Whole sectors and ranges apart: nothing to say.
    let three = dir.path().join("three.hds");
    let out = prlimg_ok(&[
        "create",
        s(&three),
        "--size",
        "4M",
        "--data",
        "0:1M:1",
        "--data",
        "1M:1M:2",
    ]);
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_folder_without_a_descriptor_is_named_as_such() {
    let dir = tmp();
    let adir = dir.path().join("adir");
    fs::create_dir(&adir).unwrap();
    for cmd in ["check", "info", "map"] {
        let out = prlimg(&[cmd, s(&adir)]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(
            stderr(&out),
            format!(
                "prlimg: {0}: is a folder without DiskDescriptor.xml: not a bundle (to check the images in it: prlimg check --recursive {0})\n",
                s(&adir)
            ),
            "{cmd}"
        );
    }
}

#[test]
fn create_of_an_hdd_name_makes_a_bundle_and_a_bundle_recipe_asks_for_bundle() {
    let dir = tmp();
    let d = dir.path();
    let hdd = d.join("foo.hdd");
    prlimg_ok(&["create", s(&hdd), "--size", "4M", "--data", "0:64K:0xaa"]);
    assert!(hdd.join("DiskDescriptor.xml").is_file());
    let out = prlimg_ok(&["check", s(&hdd)]);
    assert!(stdout(&out).contains("No errors"), "{}", stdout(&out));
    // What only a single image has: refused, saying why.
    let v1 = d.join("v1.hdd");
    let out = prlimg(&["create", s(&v1), "--size", "4M", "--v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: a name ending in .hdd makes a bundle folder, which --v1 is not for; name the image .hds\n",
            s(&v1)
        )
    );
    assert!(!v1.exists());
    // A bundle recipe given for a single image.
    let recipe = d.join("bundle.toml");
    fs::write(
        &recipe,
        "size = \"4M\"\nsplit_at = [\"2M\"]\n[[snapshots]]\nguid = \"5fbaabe3-6958-40ff-92a7-860e329aab41\"\n",
    )
    .unwrap();
    let img = d.join("x.hds");
    let out = prlimg(&["create", s(&img), "--recipe", s(&recipe)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: is a bundle recipe: add --bundle to create the bundle folder it describes\n",
            s(&recipe)
        )
    );
    assert!(!img.exists());
}

#[test]
fn batch_lines_name_the_verdicts_rules_and_skip_manifests() {
    let dir = tmp();
    let d = dir.path();
    let corpus = d.join("corpus");
    prlimg_ok(&["mutate", s(&image_a(d)), s(&corpus), "--count", "2"]);
    assert!(corpus.join("manifest.json").is_file());
    let out = prlimg(&["check", "--recursive", s(&corpus)]);
    let text = stdout(&out);
    assert!(!text.contains("manifest.json"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(s(&corpus))).count(),
        2,
        "one line per variant: {text}"
    );
    // A clean image with a non-canonical finding: after the verdict, not in parentheses.
    let odd = d.join("odd.hds");
    prlimg_ok(&["create", s(&odd), "--size", "4M", "--inuse", "0x1234"]);
    let leaky = d.join("leaky.hds");
    prlimg_ok(&[
        "create",
        s(&leaky),
        "--size",
        "4M",
        "--inuse",
        "0x1234",
        "--cluster-size",
        "64K",
    ]);
    let mut f = fs::OpenOptions::new().append(true).open(&leaky).unwrap();
    std::io::Write::write_all(&mut f, &[0x55; 65536]).unwrap();
    drop(f);
    let out = prlimg(&["check", s(&odd), s(&leaky)]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(
        lines,
        [
            format!("{}: clean, non-canonical: R8", s(&odd)),
            format!("{}: leaks (R20), non-canonical: R8", s(&leaky)),
        ],
        "{text}"
    );
}

#[test]
fn corpus_names_its_variants_as_mutate_does() {
    let dir = tmp();
    let corpus = dir.path().join("c");
    prlimg_ok(&["corpus", s(&corpus)]);
    let mut names: Vec<String> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mutant-"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for (k, n) in names.iter().enumerate() {
        assert_eq!(n, &format!("mutant-{k:06}.hds"));
    }
}

/// A raw file of 4 MiB: 3 bytes at 1 MiB (one 4 KiB block of data), holes elsewhere.
fn raw_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("r.raw");
    let f = fs::File::create(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"abc", 1 << 20).unwrap();
    p
}

#[test]
fn format_flag_is_taken_by_every_reader_and_raw_is_honoured() {
    let dir = tmp();
    let d = dir.path();
    let a = image_a(d);
    let r = raw_file(d);
    // -f parallels (and auto) everywhere an image is read.
    let corpus = d.join("m");
    let damaged = d.join("damaged.hds");
    for args in [
        vec!["info", "-f", "parallels", s(&a)],
        vec!["check", "-f", "parallels", s(&a)],
        vec!["bitmaps", "-f", "parallels", s(&a)],
        vec!["map", "-f", "auto", s(&a)],
        vec!["mutate", "-f", "parallels", s(&a), s(&corpus), "--count", "1"],
        vec![
            "corrupt",
            "-f",
            "parallels",
            s(&a),
            s(&damaged),
            "--defect",
            "bad-magic",
        ],
        vec!["convert", "-f", "parallels", s(&a), s(&d.join("a.raw"))],
    ] {
        prlimg_ok(&args);
    }
    // -f raw: info and map read the file as the guest's bytes.
    let out = prlimg_ok(&["info", "-f", "raw", s(&r)]);
    assert_eq!(
        stdout(&out),
        format!(
            "image: {}\nfile format: raw\nvirtual size: 4 MiB (4194304 bytes)\ndata: 4 KiB (4096 bytes; the rest are holes)\n",
            s(&r)
        )
    );
    let out = prlimg_ok(&["map", "-f", "raw", "--output", "json", s(&r)]);
    assert_eq!(
        stdout(&out),
        "[{ \"start\": 0, \"length\": 1048576, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false},\n\
         { \"start\": 1048576, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 1048576},\n\
         { \"start\": 1052672, \"length\": 3141632, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false}]\n"
    );
    // ... the commands that read Parallels structure say why not.
    let out = prlimg(&["check", "-f", "raw", s(&r)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: -f raw: a raw file has no metadata to check; `prlimg check` reads Parallels images and bundles \
             (info, map and convert read raw files)\n",
            s(&r)
        )
    );
    // A format this tool does not read is a usage error: exit 1.
    let out = prlimg(&["info", "-f", "qcow2", s(&a)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: invalid value 'qcow2' for '--format <FORMAT>'\n  [possible values: auto, parallels, raw]\n"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn html_is_offered_only_where_it_is_made() {
    let dir = tmp();
    let a = image_a(dir.path());
    for cmd in ["info", "map"] {
        let out = prlimg(&[cmd, "--output", "html", s(&a)]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(
            stderr(&out),
            "error: invalid value 'html' for '--output <OUTPUT>'\n  [possible values: human, json]\n\n\
             For more information, try '--help'.\n",
            "{cmd}"
        );
    }
}

#[test]
fn quiet_prints_nothing_but_errors_and_keeps_the_exit_status() {
    let dir = tmp();
    let d = dir.path();
    let leaky = d.join("leaky.hds");
    prlimg_ok(&["create", s(&leaky), "--size", "4M", "--cluster-size", "64K"]);
    let mut f = fs::OpenOptions::new().append(true).open(&leaky).unwrap();
    std::io::Write::write_all(&mut f, &[0x55; 65536]).unwrap();
    drop(f);
    for args in [vec!["-q", "check", s(&leaky)], vec!["check", "-q", s(&leaky)]] {
        let out = prlimg(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()), "{args:?}");
    }
    let one = d.join("one.hds");
    let out = prlimg(&["create", "-q", s(&one), "--size", "1"]);
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
    // Errors are still said.
    let out = prlimg(&["info", "-q", s(&d.join("absent.hds"))]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: No such file or directory\n", s(&d.join("absent.hds")))
    );
}

#[test]
fn convert_p_shows_progress_as_qemu_img_does() {
    let dir = tmp();
    let d = dir.path();
    let a = image_a(d);
    let out = prlimg_ok(&["convert", "-p", s(&a), s(&d.join("a.raw"))]);
    let err = stderr(&out);
    assert!(err.ends_with('\n'), "{err:?}");
    // Each drawing after a carriage return; the last says 100 %.
    let drawings: Vec<&str> = err
        .trim_end_matches('\n')
        .split('\r')
        .map(str::trim_end)
        .filter(|d| !d.is_empty())
        .collect();
    assert_eq!(drawings.last(), Some(&"    (100/100%)"), "{err:?}");
    for d in &drawings {
        let p = d.strip_prefix("    (").and_then(|r| r.strip_suffix("/100%)"));
        assert!(
            p.is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p <= 100)),
            "{d:?} in {err:?}"
        );
    }
    // Without -p, and stderr not a terminal: nothing.
    let out = prlimg_ok(&["convert", s(&a), s(&d.join("b.raw"))]);
    assert_eq!(stderr(&out), "");
}

#[test]
fn man_writes_every_subcommands_page() {
    let dir = tmp();
    let pages = dir.path().join("man1");
    prlimg_ok(&["man", "--dir", s(&pages)]);
    let mut names: Vec<String> = fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "prlimg-bitmaps-add.1",
            "prlimg-bitmaps-clear.1",
            "prlimg-bitmaps-remove.1",
            "prlimg-bitmaps.1",
            "prlimg-check.1",
            "prlimg-completions.1",
            "prlimg-convert.1",
            "prlimg-corpus.1",
            "prlimg-corrupt.1",
            "prlimg-create.1",
            "prlimg-differential.1",
            "prlimg-info.1",
            "prlimg-man.1",
            "prlimg-map.1",
            "prlimg-mutate.1",
            "prlimg-repair.1",
            "prlimg.1",
        ]
    );
    let check = fs::read_to_string(pages.join("prlimg-check.1")).unwrap();
    assert!(check.contains(".TH prlimg-check 1"), "{check}");
    // The top page refers to the pages written.
    let top = fs::read_to_string(pages.join("prlimg.1")).unwrap();
    for sub in ["check", "convert", "map"] {
        assert!(top.contains(&format!("prlimg\\-{sub}(1)")), "{sub}");
    }
    // Never replaced unless asked.
    let out = prlimg(&["man", "--dir", s(&pages)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: already exists (use --force to replace it)\n",
            s(&pages.join("prlimg.1"))
        )
    );
    prlimg_ok(&["man", "--dir", s(&pages), "--force"]);
    // On stdout: every page, one after another.
    let all = stdout(&prlimg_ok(&["man"]));
    assert_eq!(
        all.matches("\n.TH ").count() + usize::from(all.starts_with(".TH ")),
        names.len()
    );
    assert!(all.contains(".TH prlimg-check 1"));
}

#[test]
fn the_example_bundle_recipe_builds_a_clean_bundle() {
    let dir = tmp();
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes/with-snapshots.bundle.toml");
    let out = dir.path().join("disk.hdd");
    prlimg_ok(&["create", s(&out), "--bundle", "--recipe", s(&recipe)]);
    let check = prlimg(&["check", s(&out)]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    let mut files: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "DiskDescriptor.xml",
            "disk.hdd",
            "disk.hdd.0.{11110000-0000-4000-8000-000000000001}.hds",
            "disk.hdd.0.{5fbaabe3-6958-40ff-92a7-860e329aab41}.hds",
            "disk.hdd.1.{11110000-0000-4000-8000-000000000001}.hds",
            "disk.hdd.1.{5fbaabe3-6958-40ff-92a7-860e329aab41}.hds",
        ]
    );
    // The top reads its own data over its parent's.
    let raw = dir.path().join("disk.raw");
    prlimg_ok(&["convert", s(&out), s(&raw)]);
    let bytes = fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    assert!(bytes[..1 << 20].iter().all(|&b| b == 0xaa));
    assert!(bytes[1 << 20..2 << 20].iter().all(|&b| b == 0x55));
    assert!(bytes[2 << 20..4 << 20].iter().all(|&b| b == 0xaa));
    assert!(bytes[4 << 20..40 << 20].iter().all(|&b| b == 0));
    assert!(bytes[40 << 20..41 << 20].iter().all(|&b| b == 0x11));
    assert!(bytes[41 << 20..].iter().all(|&b| b == 0));
}

/// README item 10: what `check` says about ploop's mount is where README says it is. The
/// README's demo has ploop's check and CBT loader on one line and no `ploop mount:` line (a
/// mount leaves it as it is); the `--preset ploop` image the README names gets the mount line it
/// quotes, and the first lines say it too; JSON always has `ploop.mount`.
#[test]
fn readme_says_where_check_puts_ploops_mount() {
    let readme = fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let dir = tmp();
    let demo = dir.path().join("demo.hds");
    // README's own command, run in `dir`.
    let mut args = readme::demo_create_args();
    args[1] = s(&demo).to_string();
    prlimg_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = stdout(&prlimg_ok(&["check", s(&demo)]));
    let ploop: Vec<&str> = text.lines().filter(|l| l.starts_with("ploop")).collect();
    let detail = "ploop: check exit 0; CBT ignores the extension (inuse is 0)";
    assert_eq!(
        ploop,
        [
            "ploop: works: `ploop check` passes, and its CBT loader skips the bitmaps (inuse is 0).",
            detail
        ],
        "{text}"
    );
    assert!(readme.contains(&format!(
        "(`{detail}`). A mount leaves this image as it is, so no `ploop mount:` line follows"
    )));
    let json = json_of(&prlimg_ok(&["check", s(&demo), "--output", "json"]));
    assert_eq!(json["ploop"]["mount"]["effect"], "unchanged");
    assert!(readme.contains(
        "`--output json` always has the mount, as `ploop.mount` (`spec/ploop.md`, \"`prlimg check`'s ploop block\")"
    ));
    let spec = fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/ploop.md")).unwrap();
    assert!(spec.contains("## `prlimg check`'s ploop block"));

    // The image the README names, whose mount cuts the file.
    let args = "create pl.hds --size 64M --preset ploop --data 0:1M:0xaa --bitmap e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:0+2M";
    assert!(readme.contains(&format!("for `{args}`, whose file ends with the bitmap cluster")));
    let pl = dir.path().join("pl.hds");
    let mut argv: Vec<&str> = args.split(' ').collect();
    argv[1] = s(&pl);
    prlimg_ok(&argv);
    let text = stdout(&prlimg_ok(&["check", s(&pl)]));
    let ploop: Vec<&str> = text.lines().filter(|l| l.starts_with("ploop")).collect();
    let first = "ploop: `ploop check` passes, but a mount cuts the file to 2097152 bytes.";
    let mount = "ploop mount: cuts the file to 2097152 bytes, ext_off left past the end";
    assert_eq!(
        ploop,
        [
            first,
            "ploop: check exit 0; CBT loads bitmap e4f2eed0-37fe-4539-b50b-85d2e7fd235f",
            mount
        ],
        "{text}"
    );
    assert!(readme.contains(&format!("`{mount}`")));
    assert!(readme.contains(&format!("``{first}``")));
    let json = json_of(&prlimg_ok(&["check", s(&pl), "--output", "json"]));
    assert_eq!(json["ploop"]["mount"]["effect"], "truncates");
}

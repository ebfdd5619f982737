use super::*;

fn dead_letter(dir: &Path, max: u64) -> DeadLetter {
    DeadLetter::new(dir, max, Arc::default())
}

/// `n` lines of about 80 bytes, tagged `tag`, numbered from `from`.
fn lines(tag: &str, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            format!(
                "m,t={tag},pad={} v={i}i {}\n",
                "x".repeat(40),
                1_700_000_000_000_000_000u64 + i as u64
            )
        })
        .collect()
}

/// Every line of every file, oldest first, as `list` and `resend` read them.
fn on_disk(d: &DeadLetter) -> Vec<String> {
    d.snapshot()
        .unwrap()
        .into_iter()
        .flat_map(|f| f.entries)
        .flat_map(|e| e.lines)
        .collect()
}

/// Reasons of the entries of one file, in order.
fn reasons(path: &Path) -> Vec<String> {
    read_entries(path)
        .unwrap()
        .iter()
        .map(|e| e.reason().to_string())
        .collect()
}

/// Bytes of the current file and its rotations.
fn bounded_bytes(d: &DeadLetter) -> u64 {
    (0..=ROTATIONS)
        .map(|i| file_size(&d.rotation(i)).unwrap())
        .sum()
}

#[test]
fn rotations_shift_up_and_the_oldest_goes_with_its_lines_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A quarter is 1000 bytes: two entries of five 80-byte lines fit, a third does not.
    let d = dead_letter(dir.path(), 4000);
    for k in 0..8 {
        assert_eq!(
            d.append(&lines("a", k * 5, 5), &format!("r{k}")).unwrap(),
            5
        );
    }
    assert_eq!(reasons(&d.rotation(3)), ["r0", "r1"]);
    assert_eq!(reasons(&d.rotation(2)), ["r2", "r3"]);
    assert_eq!(reasons(&d.rotation(1)), ["r4", "r5"]);
    assert_eq!(reasons(&d.path()), ["r6", "r7"]);
    assert_eq!(d.stats.dropped_lines.load(Relaxed), 0);

    d.append(&lines("a", 40, 5), "r8").unwrap();
    assert_eq!(reasons(&d.rotation(3)), ["r2", "r3"]);
    assert_eq!(reasons(&d.rotation(2)), ["r4", "r5"]);
    assert_eq!(reasons(&d.rotation(1)), ["r6", "r7"]);
    assert_eq!(reasons(&d.path()), ["r8"]);
    // Entries r0 and r1: ten lines, their two comments not counted.
    assert_eq!(d.stats.dropped_lines.load(Relaxed), 10);
    assert_eq!(on_disk(&d).len(), 35);
    assert_eq!(d.stats.bytes.load(Relaxed), bounded_bytes(&d));
}

#[test]
fn the_bound_holds_for_any_append_sizes_and_every_line_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let max = 2000;
    let d = dead_letter(dir.path(), max);
    let mut appended = 0u64;
    let mut seed = 7u64;
    for k in 0..300 {
        // 1 to 40 lines of 80 bytes: up to 1.6 bound, often above a quarter.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = 1 + (seed >> 33) as usize % 40;
        let body = lines("b", k * 100, n);
        appended += d.append(&body, "HTTP 400: refused").unwrap() as u64;
        let total = bounded_bytes(&d);
        let alone = (1..=ROTATIONS).all(|i| !d.rotation(i).exists())
            && read_entries(&d.path()).unwrap().len() == 1;
        assert!(
            total <= max || alone,
            "append {k} ({} bytes): files hold {total} bytes, bound {max}",
            body.len()
        );
        assert!(
            total <= max.max(body.len() as u64 + 64),
            "append {k}: {total} bytes"
        );
        assert_eq!(d.stats.bytes.load(Relaxed), total);
        let kept = on_disk(&d).len() as u64;
        assert_eq!(kept + d.stats.dropped_lines.load(Relaxed), appended);
    }
    assert!(d.stats.dropped_lines.load(Relaxed) > 0);
}

#[test]
fn comments_head_entries_and_are_never_read_as_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dead_letter(dir.path(), 1 << 20);
    // A file from before reasons were kept, then one with them, an empty entry and a blank line.
    fs::write(
        d.path(),
        "m v=1 1\n# 2026-01-02T03:04:05.000Z HTTP 400: bad field\nm v=2 2\n\nm v=3 3\n# 2026-01-02T03:04:06.000Z nothing after me\n",
    )
    .unwrap();
    let e = read_entries(&d.path()).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].header.as_deref(), e[0].reason()),
        (None, "reason unknown")
    );
    assert_eq!(e[0].lines, ["m v=1 1"]);
    assert_eq!(e[1].reason(), "HTTP 400: bad field");
    assert_eq!(
        e[1].time().unwrap().to_rfc3339(),
        "2026-01-02T03:04:05+00:00"
    );
    assert_eq!(e[1].lines, ["m v=2 2", "m v=3 3"]);

    // What the database refused may span lines and hold comments; the comment stays one line.
    let kept = d
        .append("m v=4 4\n\n# a comment\nm v=5 5", "HTTP 400: two\nlines")
        .unwrap();
    assert_eq!(kept, 2);
    let e = read_entries(&d.path()).unwrap();
    assert_eq!(e[2].reason(), "HTTP 400: two lines");
    assert_eq!(e[2].lines, ["m v=4 4", "m v=5 5"]);
    assert!(e[2].time().is_some());
    assert_eq!(d.append("\n# only a comment\n", "x").unwrap(), 0);
    assert_eq!(
        count_lines(fs::read(d.path()).unwrap().as_slice()).unwrap(),
        5
    );

    // Put back as read: the comments come back unchanged, a missing one says so.
    let before = read_entries(&d.path()).unwrap();
    fs::remove_file(d.path()).unwrap();
    assert_eq!(d.put_back(&before).unwrap(), 5);
    let after = read_entries(&d.path()).unwrap();
    assert_eq!(after[1..], before[1..]);
    assert_eq!(after[0].lines, before[0].lines);
    assert_eq!(after[0].reason(), "reason unknown");
    assert!(after[0].time().is_some());
}

#[test]
fn the_lock_keeps_every_line_of_two_writers_and_a_resend() {
    let dir = tempfile::tempdir().unwrap();
    let max = 16_000;
    let writers: Vec<_> = ["p", "q"]
        .into_iter()
        .map(|tag| {
            // Each its own instance, as the daemon and the resend command are.
            let d = dead_letter(dir.path(), max);
            std::thread::spawn(move || {
                let mut n = 0;
                for k in 0..300 {
                    let body = lines(tag, n, 1 + k % 3);
                    n += d.append(&body, &format!("{tag}{k}")).unwrap();
                }
                (n, d.stats.dropped_lines.load(Relaxed))
            })
        })
        .collect();
    let resender = {
        let d = dead_letter(dir.path(), max);
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            for _ in 0..20 {
                let held = d.begin_resend().unwrap().expect("the only resend");
                let files = d.take_for_resend(&held).unwrap();
                for f in &files {
                    for e in read_entries(f).unwrap() {
                        assert!(e.header.is_some(), "a line without its comment: {e:?}");
                        taken.extend(e.lines);
                    }
                }
                d.finish_resend(&files, &held).unwrap();
                std::thread::yield_now();
            }
            taken
        })
    };
    let mut appended = 0;
    let mut dropped = 0;
    for w in writers {
        let (n, x) = w.join().unwrap();
        appended += n as u64;
        dropped += x;
    }
    let d = dead_letter(dir.path(), max);
    let mut all = resender.join().unwrap();
    for f in d.snapshot().unwrap() {
        for e in f.entries {
            assert!(e.header.is_some(), "a line without its comment: {e:?}");
            all.extend(e.lines);
        }
    }
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a line was kept twice");
    assert!(
        all.iter()
            .all(|l| l.starts_with("m,t=") && l.split(' ').count() == 3),
        "a torn line"
    );
    assert_eq!(all.len() as u64 + dropped, appended);
}

#[test]
fn a_resend_takes_every_file_and_an_interrupted_ones_leftovers_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dead_letter(dir.path(), 4000);
    d.append(&lines("a", 0, 5), "first").unwrap();
    d.append(&lines("a", 5, 5), "second").unwrap();
    d.append(&lines("a", 10, 5), "third").unwrap(); // rotates: .1 holds first and second
    let held = d.begin_resend().unwrap().unwrap();
    assert!(d.begin_resend().unwrap().is_none(), "two resends at once");
    assert!(d.resend_running());
    let taken = d.take_for_resend(&held).unwrap();
    let names: Vec<_> = taken.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names, ["dead-letter.resend.1", "dead-letter.resend.2"]);
    assert_eq!(reasons(&taken[0]), ["first", "second"]);
    assert!(!d.path().exists() && !d.rotation(1).exists());

    // The daemon goes on appending meanwhile, into a new file.
    d.append(&lines("a", 15, 5), "fourth").unwrap();
    assert_eq!(reasons(&d.path()), ["fourth"]);
    assert_eq!(d.stats.bytes.load(Relaxed), {
        let s: u64 = taken.iter().map(|p| file_size(p).unwrap()).sum();
        s + file_size(&d.path()).unwrap()
    });

    // Interrupted: the resend stops without finishing.
    drop(held);
    assert!(!d.resend_running());
    let held = d.begin_resend().unwrap().unwrap();
    let taken = d.take_for_resend(&held).unwrap();
    let read: Vec<String> = taken.iter().flat_map(|p| reasons(p)).collect();
    assert_eq!(read, ["first", "second", "third", "fourth"]);
    assert_eq!(
        taken.last().unwrap().file_name().unwrap(),
        "dead-letter.resend.3"
    );
    d.finish_resend(&taken, &held).unwrap();
    assert!(d.snapshot().unwrap().is_empty());
    assert_eq!(d.stats.bytes.load(Relaxed), 0);
    assert_eq!(d.refresh().unwrap(), 0);
}

#[test]
fn a_rotation_that_cannot_be_removed_fails_the_append_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dead_letter(dir.path(), 4000);
    for k in 0..8 {
        d.append(&lines("a", k * 5, 5), &format!("r{k}")).unwrap();
    }
    // The oldest rotation replaced by something no one can remove as a file, not even root:
    // a directory with a file in it.
    let oldest = d.rotation(ROTATIONS);
    std::fs::remove_file(&oldest).unwrap();
    std::fs::create_dir(&oldest).unwrap();
    std::fs::write(oldest.join("x"), "x").unwrap();
    let mut failed = false;
    for k in 8..16 {
        if d.append(&lines("b", k * 5, 5), "r").is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the appends went on past the bound");
    // Nothing else was touched, and the next append fails again rather than hanging.
    assert!(d.append(&lines("c", 0, 50), "r").is_err());
}

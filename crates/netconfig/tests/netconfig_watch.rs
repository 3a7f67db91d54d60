//! The file watcher publishes each accepted change, keeps the previous version of a rejected
//! object (publishing nothing for it), and follows edits found by polling.

use std::time::Duration;

use meshmeter_netconfig::NetWatcher;

fn rule(host: &str, subset: &str) -> String {
    format!("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: db\nspec:\n  host: {host}\n  subsets:\n  - name: {subset}\n    labels: {{version: v1}}\n")
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netconfig-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn accepted_changes_are_published_and_rejected_ones_keep_the_previous_version() {
    let dir = fresh_dir("watch-reload");
    let file = dir.join("db.yaml");
    std::fs::write(&file, rule("mongodb", "v1")).unwrap();
    let watcher = NetWatcher::new(vec![dir.clone()]);
    let mut rx = watcher.subscribe();
    assert_eq!(rx.borrow_and_update().destination_rules[0].host, "mongodb");

    std::fs::write(&file, rule("mongodb-2", "v1")).unwrap();
    assert_eq!(watcher.reload_now(), vec![]);
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().destination_rules[0].host,
        "mongodb-2"
    );

    // Broken: rejected, the previous version stays, nothing is published.
    std::fs::write(&file, rule("mongodb-3", "\"\"")).unwrap();
    let problems = watcher.reload_now();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].previous_in_force);
    assert_eq!(
        problems[0]
            .diagnostics
            .iter()
            .next()
            .unwrap()
            .to_string()
            .lines()
            .next()
            .unwrap(),
        format!(
            "{}:8:11: error[C0010]: spec.subsets[0].name of DestinationRule default/db is empty",
            file.display()
        )
    );
    assert!(!rx.has_changed().unwrap());
    assert_eq!(watcher.current().destination_rules[0].host, "mongodb-2");
    assert_eq!(watcher.rejected_objects(), 1);

    // Removed: gone.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(watcher.reload_now(), vec![]);
    assert!(watcher.current().destination_rules.is_empty());
    assert_eq!(watcher.rejected_objects(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn polling_finds_an_edit() {
    let dir = fresh_dir("watch-poll");
    let file = dir.join("db.yaml");
    std::fs::write(&file, rule("mongodb", "v1")).unwrap();
    let mut watcher = NetWatcher::new(vec![dir.clone()]);
    let mut rx = watcher.subscribe();
    rx.borrow_and_update();
    watcher.spawn_polling(Duration::from_millis(20));
    std::fs::write(&file, rule("mongodb", "v2")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("the edit is published")
        .unwrap();
    assert_eq!(rx.borrow().destination_rules[0].subsets[0].name, "v2");
    let _ = std::fs::remove_dir_all(&dir);
}

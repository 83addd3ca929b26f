//! Watches folders for changes that can alter a file's content, and hands
//! them over in quiet-period batches.
//!
//! Only writes, creations, renames and removals count. Opening or reading a
//! file does not: inotify reports those too, and a watcher that reacted to
//! them would wake itself with its own reads of the file it reloads.

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
}

/// Whether an event can have changed what a file holds.
pub fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // A writer closing the file: the write is complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Watch `dirs` (not recursively) for changes to the paths `wanted`
/// accepts. Changed paths are sent as one sorted batch once no change has
/// arrived for `quiet`. The others are dropped on the watcher's thread: a
/// log or a database written in a watched folder would otherwise wake the
/// runtime at every write. Must be called inside the Tokio runtime.
pub fn watch(
    dirs: &[PathBuf],
    quiet: Duration,
    wanted: impl Fn(&Path) -> bool + Send + 'static,
) -> Result<(FolderWatch, mpsc::Receiver<Vec<PathBuf>>), String> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) if changes_content(&event.kind) => {
                for path in event.paths.into_iter().filter(|p| wanted(p)) {
                    let _ = raw_tx.send(path);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "folder watch error"),
        })
        .map_err(|e| format!("cannot start watching: {e}"))?;
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut batch = BTreeSet::from([first]);
            // Editors and copies write in several steps: wait for quiet.
            while let Ok(Some(path)) = tokio::time::timeout(quiet, raw_rx.recv()).await {
                batch.insert(path);
            }
            if tx.send(batch.into_iter().collect()).await.is_err() {
                return;
            }
        }
    });
    Ok((FolderWatch { _watcher: watcher }, rx))
}

/// `path` with symlinks and `..` resolved where it exists.
pub fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    #[test]
    fn reads_and_opens_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(changes_content(&kind), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn only_the_wanted_paths_are_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let folder = canonical(dir.path());
        let (_watch, mut batches) = watch(std::slice::from_ref(&folder), Duration::from_millis(50), |p| {
            p.file_name().is_some_and(|n| n == "gateway.toml")
        })
        .unwrap();
        for i in 0..20 {
            std::fs::write(folder.join("gateway.log"), format!("line {i}")).unwrap();
        }
        std::fs::write(folder.join("gateway.toml"), "[server]").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(5), batches.recv())
            .await
            .expect("a batch")
            .unwrap();
        assert_eq!(batch, [folder.join("gateway.toml")]);
    }
}

//! `keel images pull|ls|rm|import`: the node's image store from the command line (the same
//! store `keel run --runtime native` uses; run it on the node, as root, like `crictl`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::genericruntime::seam::{cri, PullProgress};

use super::hosts::HostsConfig;
use super::metadata::ImageRecord;
use super::service::{store_root, DEFAULT_REGISTRY_CONFIG_DIR};
use super::store::ImageStore;

/// Manage the native backend's images.
#[derive(clap::Args, Debug, Clone)]
pub struct ImagesArgs {
    /// keel's state directory (the store is `<root-dir>/native/images`).
    #[arg(long, global = true, default_value = "/var/lib/keel")]
    pub root_dir: PathBuf,
    /// containerd-style `<host>/hosts.toml` registry configuration.
    #[arg(long, global = true, default_value = DEFAULT_REGISTRY_CONFIG_DIR)]
    pub registry_config_dir: PathBuf,
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ImagesCommand {
    /// Pull an image from a registry.
    Pull {
        image: String,
        /// Registry credentials `USER[:PASSWORD]`.
        #[arg(long)]
        creds: Option<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List images (like `crictl images`).
    #[command(alias = "list")]
    Ls {
        /// Only image IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Full image IDs and digests.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove images by name or ID.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an OCI image layout tarball or a `docker save` archive.
    Import {
        file: PathBuf,
        /// Name for OCI images whose `ref.name` annotation is only a tag: `<base-name>:<tag>`.
        #[arg(long)]
        base_name: Option<String>,
    },
}

/// Entry point from `main`.
pub fn main(args: ImagesArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hosts_dir = args
        .registry_config_dir
        .is_dir()
        .then(|| args.registry_config_dir.clone());
    let store = Arc::new(
        ImageStore::open(&store_root(&args.root_dir), HostsConfig::new(hosts_dir))
            .with_context(|| format!("opening the image store in {}", args.root_dir.display()))?,
    );
    match args.command {
        ImagesCommand::Pull { image, creds, quiet } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(pull(store, &image, creds, quiet))
        }
        ImagesCommand::Ls { quiet, no_trunc } => {
            print!("{}", table(&store.list(), quiet, no_trunc));
            Ok(())
        }
        ImagesCommand::Rm { images } => {
            let mut failed = false;
            for i in images {
                match store.remove(&i) {
                    Ok(Some(rec)) => println!(
                        "Deleted: {}",
                        rec.repo_tags.first().cloned().unwrap_or(rec.id.to_string())
                    ),
                    Ok(None) => {
                        eprintln!("ERRO[0000] no such image {i}");
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("ERRO[0000] removing image {i}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("unable to remove the images");
            }
            Ok(())
        }
        ImagesCommand::Import { file, base_name } => {
            let imgs = store
                .import(&file, base_name.as_deref())
                .with_context(|| format!("importing {}", file.display()))?;
            for i in imgs {
                let name = i.repo_tags.first().cloned().unwrap_or_else(|| "<none>".into());
                println!("unpacking {name} ({})...done", i.id);
            }
            Ok(())
        }
    }
}

async fn pull(store: Arc<ImageStore>, image: &str, creds: Option<String>, quiet: bool) -> Result<()> {
    let auth = creds.map(|c| {
        let (u, p) = c.split_once(':').unwrap_or((&c, ""));
        cri::AuthConfig {
            username: u.to_string(),
            password: p.to_string(),
            ..Default::default()
        }
    });
    let progress = Arc::new(PullProgress::default());
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(image.to_string());
        b
    });
    let ticker = bar.clone().map(|b| {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                b.set_length(p.total.load(Ordering::Relaxed));
                b.set_position(p.done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let started = Instant::now();
    let res = store.pull(image, auth.as_ref(), Some(progress.clone())).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rec = res.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "Image is up to date for {} ({} in {:.1?}, {} downloaded)",
        rec.id,
        human(rec.size),
        started.elapsed(),
        human(progress.done.load(Ordering::Relaxed))
    );
    Ok(())
}

/// Sizes the way crictl prints them: decimal units, three significant digits.
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", units[i])
}

/// `crictl images` columns: IMAGE TAG IMAGE ID SIZE.
pub fn table(images: &[ImageRecord], quiet: bool, no_trunc: bool) -> String {
    let mut rows: Vec<[String; 4]> = vec![];
    for i in images {
        let id = if no_trunc {
            i.id.to_string()
        } else {
            i.id.hex()[..13].to_string()
        };
        if quiet {
            rows.push([i.id.to_string(), String::new(), String::new(), String::new()]);
            continue;
        }
        let size = human(i.size);
        let mut names: Vec<(String, String)> = i
            .repo_tags
            .iter()
            .map(|t| {
                let (repo, tag) = t.rsplit_once(':').unwrap_or((t, "<none>"));
                (repo.to_string(), tag.to_string())
            })
            .collect();
        if names.is_empty() {
            for d in &i.repo_digests {
                let repo = d.split('@').next().unwrap_or(d);
                names.push((repo.to_string(), "<none>".into()));
            }
        }
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            rows.push([repo, tag, id.clone(), size.clone()]);
        }
    }
    if quiet {
        return rows.iter().map(|r| format!("{}\n", r[0])).collect();
    }
    rows.sort();
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let all: Vec<&[String; 4]> = std::iter::once(&header).chain(rows.iter()).collect();
    let w: Vec<usize> = (0..3)
        .map(|c| all.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        out.push_str(&format!(
            "{:w0$}   {:w1$}   {:w2$}   {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::native::images::digest::Digest;

    #[test]
    fn human_sizes_like_crictl() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_000), "1kB");
        assert_eq!(human(1_234_567), "1.23MB");
        assert_eq!(human(123_456_789), "123MB");
        assert_eq!(human(4_500_000), "4.5MB");
    }

    #[test]
    fn table_like_crictl_images() {
        let rec = ImageRecord {
            id: Digest::of(b"cfg"),
            repo_tags: vec!["docker.io/library/busybox:1.36".into()],
            repo_digests: vec![],
            manifest: Digest::of(b"m"),
            blobs: vec![],
            diff_ids: vec![],
            layers: vec![],
            size: 2_200_000,
            config: Default::default(),
            pinned: false,
        };
        let t = table(std::slice::from_ref(&rec), false, false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("IMAGE "));
        assert!(lines[1].starts_with("docker.io/library/busybox   1.36"));
        assert!(lines[1].contains(&rec.id.hex()[..13]));
        assert!(lines[1].ends_with("2.2MB"));
        assert_eq!(table(std::slice::from_ref(&rec), true, false), format!("{}\n", rec.id));
    }
}

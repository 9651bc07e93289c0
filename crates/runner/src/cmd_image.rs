//! `podci image append|copy|inspect|login`: daemonless image builds and transfers with
//! podci-registry, replacing `docker build/push` over a mounted docker.sock and
//! `docker login -p` (the password is read from stdin or a file, never from argv).

// The clap doc comments below are `--help` text with GitLab/skopeo-style syntax such as
// `oci:DIR[:TAG]`, which rustdoc would take for links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use podci_registry::image::{self, Location};
use podci_registry::{
    AppendOptions, Client, ClientOptions, ConfigChanges, LayerOptions, LayerSpec, Platform,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: ImageCmd,
}

#[derive(clap::Args)]
struct Common {
    /// Platform to pick from a multi-platform base (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Registries to reach over plain HTTP (loopback ones always are).
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Upload in PATCH chunks of this many bytes instead of one PUT per blob.
    #[arg(long)]
    chunk_size: Option<u64>,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Username for the registries this command talks to (instead of stored credentials).
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password for --username from standard input.
    #[arg(long, requires = "username", conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the password for --username from this file.
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
}

/// Reads a password from a file or stdin: never from the command line, where every user
/// of the machine could read it in the process list.
fn read_password(stdin: bool, file: Option<&PathBuf>) -> anyhow::Result<String> {
    let password = if let Some(f) = file {
        std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
    } else if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s
    } else {
        bail!("give the password with --password-stdin or --password-file (never on the command line)");
    };
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// Explicit credentials from --username for the registries of `locations`, on top of the
/// usual credential files.
fn explicit_creds(
    common: &Common,
    locations: &[&Location],
) -> anyhow::Result<Option<podci_registry::CredentialStore>> {
    let Some(user) = &common.username else {
        return Ok(None);
    };
    let password = read_password(common.password_stdin, common.password_file.as_ref())?;
    let mut store = podci_registry::CredentialStore::from_env();
    for l in locations {
        if let Location::Registry(r) = l {
            store.insert(
                &r.registry,
                podci_registry::Credential::Basic {
                    username: user.clone(),
                    password: password.clone(),
                },
            );
        }
    }
    Ok(Some(store))
}

#[derive(clap::Subcommand)]
enum ImageCmd {
    /// Add layers from local files to a base image and write the result.
    Append {
        /// Base image: a registry reference, oci:DIR[:TAG], docker-archive:FILE[:REF], or scratch.
        #[arg(long, default_value = "scratch")]
        base: String,
        /// A directory or file to add as one layer, DIR[:DEST] (repeatable).
        #[arg(long = "layer", required = true)]
        layers: Vec<String>,
        /// Entrypoint: a JSON array, or words split on whitespace.
        #[arg(long)]
        entrypoint: Option<String>,
        /// Cmd: a JSON array, or words split on whitespace.
        #[arg(long)]
        cmd: Option<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        workdir: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// PORT[/PROTO] (repeatable).
        #[arg(long = "expose")]
        expose: Vec<String>,
        /// Where to write: registry reference, oci:DIR[:TAG] or docker-archive:FILE[:REF]
        /// (repeatable: further tags of the same repository are added to the first).
        #[arg(long = "tag", required = true)]
        tags: Vec<String>,
        /// Timestamp of every file in the new layers (defaults to $SOURCE_DATE_EPOCH or 0).
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
        mtime: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Copy an image between a registry, an OCI layout and a docker archive.
    Copy {
        src: String,
        dst: String,
        /// Further tags for the destination (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Print an image's manifest digest, media types, config and layers as JSON.
    Inspect {
        reference: String,
        #[command(flatten)]
        common: Common,
    },
    /// Check credentials against a registry and store them in Docker's config.json.
    Login {
        registry: String,
        #[command(flatten)]
        common: Common,
    },
}

fn client(common: &Common, creds: Option<podci_registry::CredentialStore>) -> anyhow::Result<Client> {
    let mut opts = ClientOptions {
        insecure_registries: common.insecure.clone(),
        chunk_size: common.chunk_size,
        parallel: common.parallel.max(1),
        ..Default::default()
    };
    if let Some(p) = &common.platform {
        opts.platform = Platform::parse(p)?;
    }
    let creds = creds.unwrap_or_else(podci_registry::CredentialStore::from_env);
    Ok(Client::with_credentials(opts, creds)?)
}

fn words(s: &str) -> anyhow::Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).with_context(|| format!("{s:?} is not a JSON array of strings"))
    } else {
        Ok(s.split_whitespace().map(str::to_string).collect())
    }
}

fn kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{what} {s:?} is not KEY=VALUE"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

/// Splits `--tag` values into the first location and extra tags of the same repository;
/// other locations are written separately.
fn targets(tags: &[String]) -> anyhow::Result<(Location, Vec<String>, Vec<Location>)> {
    let mut locs = tags
        .iter()
        .map(|t| t.parse::<Location>())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let first = locs.next().context("at least one --tag is needed")?;
    let mut extra_tags = Vec::new();
    let mut others = Vec::new();
    for l in locs {
        match (&first, &l) {
            (Location::Registry(a), Location::Registry(b))
                if a.registry == b.registry && a.repository == b.repository && b.digest.is_none() =>
            {
                extra_tags.extend(b.tag.clone());
            }
            _ => others.push(l),
        }
    }
    Ok((first, extra_tags, others))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    match args.cmd {
        ImageCmd::Append {
            base,
            layers,
            entrypoint,
            cmd,
            env,
            workdir,
            user,
            labels,
            expose,
            tags,
            mtime,
            common,
        } => {
            let base = if base == "scratch" {
                None
            } else {
                Some(base.parse::<Location>()?)
            };
            let (first, extra, others) = targets(&tags)?;
            let mut all: Vec<&Location> = vec![&first];
            all.extend(others.iter());
            all.extend(base.iter());
            let client = client(&common, explicit_creds(&common, &all)?)?;
            let opts = AppendOptions {
                layers: layers
                    .iter()
                    .map(|l| LayerSpec::parse(l))
                    .collect::<Result<_, _>>()?,
                layer_options: LayerOptions {
                    mtime,
                    ..Default::default()
                },
                changes: ConfigChanges {
                    entrypoint: entrypoint.as_deref().map(words).transpose()?,
                    cmd: cmd.as_deref().map(words).transpose()?,
                    env: env
                        .iter()
                        .map(|e| kv(e, "--env").map(|(k, v)| format!("{k}={v}")))
                        .collect::<Result<_, _>>()?,
                    workdir,
                    user,
                    labels: labels
                        .iter()
                        .map(|l| kv(l, "--label"))
                        .collect::<Result<_, _>>()?,
                    exposed_ports: expose,
                },
                created: None,
            };
            let work = std::env::temp_dir();
            let appended = podci_registry::append(&client, base.as_ref(), &opts, &work).await?;
            for (loc, extra) in
                std::iter::once((&first, extra.as_slice())).chain(others.iter().map(|o| (o, &[][..])))
            {
                let rep = image::write(&client, &appended.image, loc, extra).await?;
                report(loc, &rep);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Copy {
            src,
            dst,
            tags,
            common,
        } => {
            let src: Location = src.parse()?;
            let dst: Location = dst.parse()?;
            let client = client(&common, explicit_creds(&common, &[&src, &dst])?)?;
            let rep = image::copy(&client, &src, &dst, &tags).await?;
            report(&dst, &rep);
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Inspect { reference, common } => {
            let loc: Location = reference.parse()?;
            let client = client(&common, explicit_creds(&common, &[&loc])?)?;
            let img = image::load(&client, &loc).await?;
            let cfg = img.config_json()?;
            let out = serde_json::json!({
                "reference": loc.to_string(),
                "digest": img.manifest.digest,
                "mediaType": img.manifest.media_type,
                "platform": format!("{}/{}", cfg["os"].as_str().unwrap_or("?"), cfg["architecture"].as_str().unwrap_or("?")),
                "config": cfg.get("config").cloned().unwrap_or_default(),
                "layers": img.layers.iter().map(|l| &l.desc).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Login { registry, common } => {
            let username = common.username.clone().context("--username is required")?;
            let password = read_password(common.password_stdin, common.password_file.as_ref())?;
            let host = podci_registry::auth::normalize_host(&registry);
            let mut store = podci_registry::CredentialStore::with_env(podci_registry::AuthEnv::default());
            store.insert(
                &host,
                podci_registry::Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
            );
            client(&common, Some(store))?.ping(&host).await?;
            let env = podci_registry::AuthEnv::from_process();
            let dir = env
                .docker_config_dir
                .context("no $DOCKER_CONFIG or $HOME to store credentials in")?;
            let path = podci_registry::auth::save_docker_login(&dir, &host, &username, &password)?;
            println!("Login Succeeded ({} in {})", host, path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(loc: &Location, rep: &podci_registry::WriteReport) {
    println!(
        "{loc}: {} (uploaded {}, mounted {}, already present {})",
        rep.digest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        rep.blobs_uploaded,
        rep.blobs_mounted,
        rep.blobs_existing
    );
}

//! `fake-kube`: run the fake API server by hand, print its URL, write a kubeconfig, and
//! serve until interrupted. Faults can be injected over HTTP under `/__fake/`.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A fake Kubernetes API server and kubelet for podci's tests")]
struct Args {
    /// Write a kubeconfig for the admin token here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace the kubeconfig selects.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Serve HTTPS with a self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// Behave like the recorded v1.24 server: refuse v5.channel.k8s.io.
    #[arg(long)]
    v4_only: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let opts = podci_fake_kube::Options {
            tls: args.tls,
            channel_protocols: if args.v4_only {
                podci_fake_kube::ChannelProtocols::V4Only
            } else {
                podci_fake_kube::ChannelProtocols::V5
            },
            ..Default::default()
        };
        let fake = podci_fake_kube::FakeKube::start(opts).await?;
        println!("fake-kube serving at {}", fake.url());
        if let Some(p) = &args.kubeconfig {
            fake.write_kubeconfig(p, &args.namespace)?;
            println!("kubeconfig written to {}", p.display());
        }
        // Stop on SIGINT or SIGTERM; dropping the server kills every Pod's processes.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        drop(fake);
        Ok(())
    })
}

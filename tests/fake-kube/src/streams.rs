//! `pods/exec` and `pods/attach` over WebSocket with the Kubernetes channel protocols
//! (`v4.channel.k8s.io`, and `v5.channel.k8s.io` with its CLOSE signal): the refusals
//! before the upgrade, subprotocol negotiation, the channel framing (0 stdin, 1 stdout,
//! 2 stderr, 3 status, 4 resize, 255 close) and the final Status frame.

use crate::api::Query;
use crate::kubelet::{CState, ContainerRt};
use crate::store::Key;
use crate::util::{ApiError, go_json};
use crate::{ChannelProtocols, Shared};
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    None,
    V4,
    V5,
}

fn offered_protocols(req: &Request) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request,
    ns: &str,
    name: &str,
    is_exec: bool,
    q: &Query,
) -> Result<Response, ApiError> {
    let pod = shared
        .lock()
        .get(&Key::new("pods", ns, name))
        .cloned()
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let cname = crate::kubelet::select_container(&pod, name, q)?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (want_in, want_out, want_err) = (q.flag("stdin"), q.flag("stdout"), q.flag("stderr"));
    if !want_in && !want_out && !want_err {
        return Err(ApiError::plain(
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let command = q.all("command");
    if is_exec && command.is_empty() {
        return Err(ApiError::plain(
            400,
            "you must specify at least one command for the container",
        ));
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let rt = shared.runtimes().get(&uid).cloned();
    let c = rt.as_ref().and_then(|r| r.container(&cname));
    let c = match c {
        Some(c) if c.is_running() && pod["status"]["phase"] != json!("Failed") => c,
        _ => {
            return Err(if is_exec {
                ApiError::plain(500, format!("container not found (\"{cname}\")"))
            } else {
                ApiError::plain(500, format!("container {cname} not found in pod {name}_{ns}"))
            });
        }
    };
    let offered = offered_protocols(&req);
    let proto = if offered.is_empty() {
        Proto::None
    } else {
        let mut chosen = None;
        for p in &offered {
            match p.as_str() {
                "v5.channel.k8s.io" if shared.opts.channel_protocols == ChannelProtocols::V5 => {
                    chosen = Some(Proto::V5);
                    break;
                }
                "v4.channel.k8s.io" => {
                    chosen = Some(Proto::V4);
                    break;
                }
                _ => {}
            }
        }
        match chosen {
            Some(p) => p,
            None => {
                let mut r = (StatusCode::FORBIDDEN, "").into_response();
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Ok(r);
            }
        }
    };
    let (mut parts, _) = req.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("websocket upgrade failed: {e}")))?;
    let ws = match proto {
        Proto::V5 => ws.protocols(["v5.channel.k8s.io"]),
        Proto::V4 => ws.protocols(["v4.channel.k8s.io"]),
        Proto::None => ws,
    };
    let opts = Session {
        shared: shared.clone(),
        c,
        proto,
        want_in,
        want_out,
        want_err,
        command,
    };
    let mut resp = if is_exec {
        ws.on_upgrade(move |sock| exec_session(opts, sock))
    } else {
        ws.on_upgrade(move |sock| attach_session(opts, sock))
    };
    if proto == Proto::None {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(""));
    }
    Ok(resp)
}

struct Session {
    shared: Arc<Shared>,
    c: Arc<ContainerRt>,
    proto: Proto,
    want_in: bool,
    want_out: bool,
    want_err: bool,
    command: Vec<String>,
}

fn frame(chan: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(chan);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

fn status_frame(proto: Proto, status: &Value) -> Option<Message> {
    if proto == Proto::None {
        // Without a channel protocol the status channel carries the message as text.
        let msg = status["message"].as_str()?;
        return Some(frame(3, msg.as_bytes()));
    }
    Some(frame(3, go_json(status).as_bytes()))
}

fn close_msg() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Forward client frames: stdin data, the v5 CLOSE signal; resize is ignored.
enum ClientEvent {
    Stdin(Bytes),
    CloseStdin,
    Gone,
}

fn client_event(proto: Proto, m: Message) -> Option<ClientEvent> {
    match m {
        Message::Binary(b) if !b.is_empty() => match b[0] {
            0 if b.len() > 1 => Some(ClientEvent::Stdin(b.slice(1..))),
            255 if proto == Proto::V5 && b.get(1) == Some(&0) => Some(ClientEvent::CloseStdin),
            _ => None,
        },
        Message::Close(_) => Some(ClientEvent::Gone),
        _ => None,
    }
}

async fn exec_session(s: Session, sock: WebSocket) {
    let (mut sink, mut stream) = sock.split();
    let mut drop_rx = s.shared.drop_streams.subscribe();
    if sink.send(frame(1, b"")).await.is_err() {
        return;
    }
    let Some((prog, _)) = s.command.split_first() else {
        return;
    };
    let args = &s.command[1..];
    let mut cmd = tokio::process::Command::new(prog);
    crate::kubelet::die_with_parent(&mut cmd);
    let root_err = match s.c.exec_root() {
        Some(Ok(root)) => {
            root.apply_in_child(&mut cmd);
            None
        }
        Some(Err(e)) => Some(e),
        None => None,
    };
    cmd.args(args)
        .env_clear()
        .envs(s.c.env())
        .current_dir(s.c.cwd())
        .process_group(0)
        .kill_on_drop(true)
        .stdin(if s.want_in {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(if s.want_out {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stderr(if s.want_err {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let spawned = match root_err {
        Some(e) => Err(e),
        None => cmd.spawn(),
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                if prog.contains('/') {
                    format!("stat {prog}: no such file or directory")
                } else {
                    "executable file not found in $PATH".to_string()
                }
            } else {
                e.to_string()
            };
            let msg = format!(
                "error executing command in container: failed to exec in container: failed to start exec \"{}\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"{prog}\": {why}: unknown",
                crate::util::container_id().trim_start_matches("containerd://")
            );
            let st = json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: {msg}"), "reason": "InternalError",
                "details": {"causes": [{"message": msg}]}, "code": 500});
            if let Some(f) = status_frame(s.proto, &st) {
                let _ = sink.send(f).await;
            }
            let _ = sink.send(close_msg()).await;
            return;
        }
    };
    let pid = child.id().map(|p| p as i32);
    let mut stdin = child.stdin.take();
    let cut_stdin = if s.want_in {
        s.shared.faults().cut_exec_stdin.take()
    } else {
        None
    };
    let mut stdin_passed = 0usize;
    let (otx, mut orx) = tokio::sync::mpsc::channel::<Message>(64);
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump_to(o, 1, otx.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump_to(e, 2, otx.clone())));
    }
    drop(otx);
    let kill = || {
        if let Some(p) = pid {
            // SAFETY: signalling the process group we created for this exec.
            unsafe {
                libc::killpg(p, libc::SIGKILL);
            }
        }
    };
    let mut wait = Box::pin(child.wait());
    let mut exit: Option<i32> = None;
    let mut output_done = false;
    loop {
        if output_done && exit.is_some() {
            break;
        }
        tokio::select! {
            m = orx.recv(), if !output_done => match m {
                Some(m) => if sink.send(m).await.is_err() { kill(); return; },
                None => output_done = true,
            },
            st = &mut wait, if exit.is_none() => {
                use std::os::unix::process::ExitStatusExt;
                exit = Some(match st {
                    Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
                    Err(_) => 1,
                });
                // Like the container runtime: the exec's process group ends with it.
                kill();
            }
            m = stream.next() => match m.and_then(|r| r.ok()).and_then(|m| client_event(s.proto, m).or(Some(ClientEvent::Stdin(Bytes::new())))) {
                Some(ClientEvent::Stdin(b)) => {
                    if b.is_empty() { continue; }
                    if cut_stdin == Some(0) {
                        kill();
                        return;
                    }
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&b).await.is_err() {
                        stdin = None;
                    }
                    if let Some(limit) = cut_stdin {
                        stdin_passed += b.len();
                        if stdin_passed >= limit {
                            // Let the process read what arrived, as a real shell would
                            // before the runtime notices the connection is gone.
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            kill();
                            return;
                        }
                    }
                }
                Some(ClientEvent::CloseStdin) => stdin = None,
                Some(ClientEvent::Gone) | None => {
                    // The client went away: the process ends with the connection.
                    kill();
                    let _ = sink.close().await;
                    return;
                }
            },
            _ = drop_rx.changed() => { kill(); return; }
        }
    }
    for p in pumps {
        let _ = p.await;
    }
    let code = exit.unwrap_or(1);
    let st = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", s.command.join(" ")),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    if let Some(f) = status_frame(s.proto, &st) {
        let _ = sink.send(f).await;
    }
    let _ = sink.send(close_msg()).await;
    // Wait briefly for the client's close reply so the socket closes cleanly.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn pump_to(mut r: impl tokio::io::AsyncRead + Unpin, chan: u8, tx: tokio::sync::mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frame(chan, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn attach_session(s: Session, sock: WebSocket) {
    let (mut sink, mut stream) = sock.split();
    let mut drop_rx = s.shared.drop_streams.subscribe();
    let mut out = s.c.output.subscribe();
    let exited = s.c.exited.notified();
    tokio::pin!(exited);
    exited.as_mut().enable();
    s.c.attached.fetch_add(1, Ordering::Relaxed);
    let stdin_once = s.c.spec["stdinOnce"].as_bool() == Some(true);
    let has_stdin = s.c.spec["stdin"].as_bool() == Some(true);
    let c = s.c.clone();
    let close_container_stdin = || async {
        *c.stdin.lock().await = None;
    };
    if sink.send(frame(1, b"")).await.is_err() {
        return;
    }
    // Fault injection: this session may be the one to cut (see Control).
    let (cut_stdin, cut_output) = if s.want_in {
        let mut f = s.shared.faults();
        (
            f.cut_attach_stdin.take(),
            std::mem::take(&mut f.cut_attach_output),
        )
    } else {
        (None, false)
    };
    let mut stdin_passed = 0usize;
    let mut running = s.c.is_running();
    while running {
        tokio::select! {
            m = out.recv() => match m {
                Ok((chan, data)) => {
                    if (chan == 1 && !s.want_out) || (chan == 2 && !s.want_err) { continue; }
                    if cut_output {
                        s.c.attached.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    if sink.send(frame(chan, &data)).await.is_err() { break; }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => running = false,
            },
            _ = &mut exited => running = false,
            m = stream.next() => match m.and_then(|r| r.ok()).and_then(|m| client_event(s.proto, m).or(Some(ClientEvent::Stdin(Bytes::new())))) {
                Some(ClientEvent::Stdin(b)) => {
                    if b.is_empty() || !s.want_in || !has_stdin { continue; }
                    if cut_stdin == Some(0) {
                        s.c.attached.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let mut guard = s.c.stdin.lock().await;
                    if let Some(w) = guard.as_mut()
                        && w.write_all(&b).await.is_err() {
                        *guard = None;
                    }
                    drop(guard);
                    if let Some(limit) = cut_stdin {
                        stdin_passed += b.len();
                        if stdin_passed >= limit {
                            s.c.attached.fetch_sub(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                Some(ClientEvent::CloseStdin) => close_container_stdin().await,
                Some(ClientEvent::Gone) | None => {
                    s.c.attached.fetch_sub(1, Ordering::Relaxed);
                    if stdin_once && s.want_in {
                        close_container_stdin().await;
                    }
                    let _ = sink.close().await;
                    return;
                }
            },
            _ = drop_rx.changed() => {
                s.c.attached.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        }
    }
    // Drain what the container wrote before it ended.
    while let Ok((chan, data)) = out.try_recv() {
        if (chan == 1 && !s.want_out) || (chan == 2 && !s.want_err) {
            continue;
        }
        let _ = sink.send(frame(chan, &data)).await;
    }
    s.c.attached.fetch_sub(1, Ordering::Relaxed);
    // Attach reports Success whatever the exit code; the code is in the Pod status.
    let _ = matches!(s.c.state(), CState::Terminated { .. });
    if let Some(f) = status_frame(s.proto, &json!({"metadata": {}, "status": "Success"})) {
        let _ = sink.send(f).await;
    }
    let _ = sink.send(close_msg()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

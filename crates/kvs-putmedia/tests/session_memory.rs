//! What an open session holds: heap bytes allocated (and not freed) by the client's threads
//! while sessions are opened on one client, before any media. The emulator runs on its own
//! runtime, whose threads are not counted. Prints the figure (`--nocapture`) and checks the
//! issue 13 target, 32 KiB per open session.
#![cfg(feature = "client")]
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use kvs_emulator::Emulator;
use kvs_putmedia::{PutMediaClient, SessionOptions};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a side
// effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Target of issue 13: fixed memory per open session.
const TARGET: isize = 32 * 1024;

#[test]
fn an_open_session_holds_at_most_32_kib() {
    const SESSIONS: usize = 100;
    // The emulator on its own runtime and threads: not counted.
    let emu_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = emu_rt.block_on(async {
        let emu = Emulator::builder().start().await.unwrap();
        for i in 0..=SESSIONS {
            emu.create_stream(&format!("m-{i}"), 24).await.unwrap();
        }
        emu
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let c = emu.credentials();
    let client = PutMediaClient::builder()
        .with_region(emu.region())
        .with_credentials(aws_credential_types::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "emulator",
        ))
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        .build()
        .unwrap();
    let per_session = rt.block_on(async move {
        // One session first: what is built once per client (connection pools, caches).
        let warm = client
            .start_session(SessionOptions::new("m-0"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = LIVE.load(Ordering::Relaxed);
        let mut open = Vec::new();
        for i in 1..=SESSIONS {
            let opts = SessionOptions::new(format!("m-{i}"));
            let c = client.clone();
            // Started on a worker thread, like a service's sessions.
            open.push(tokio::spawn(async move { c.start_session(opts).await }).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = LIVE.load(Ordering::Relaxed);
        let per = (after - before) / SESSIONS as isize;
        drop(open);
        drop(warm);
        per
    });
    eprintln!("heap held per open session (no media): {per_session} bytes");
    assert!(per_session > 0, "nothing measured: {per_session}");
    assert!(
        per_session <= TARGET,
        "an open session holds {per_session} bytes, above the {TARGET}-byte target"
    );
    drop(rt);
    drop(emu);
}

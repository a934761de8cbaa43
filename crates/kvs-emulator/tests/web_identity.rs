//! Web identity (EKS/IRSA-style) credentials against the emulator: the Rust SDK's default
//! chain, configured only by `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, calls STS
//! `AssumeRoleWithWebIdentity` (unsigned) and uses what it gets for STS and KVS.
//!
//! The chain reads the process environment, so the SDK part runs in a child process (this test
//! binary again, running only `child_uses_the_default_chain`) with exactly that environment.

use std::time::Duration;

use aws_config::BehaviorVersion;
use kvs_emulator::Emulator;

const CHILD: &str = "KVS_EMULATOR_WEB_IDENTITY_CHILD";

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn jwt(exp_offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&serde_json::json!({"alg": "RS256", "kid": "k"})),
        b64(&serde_json::json!({
            "sub": "system:serviceaccount:video:uploader",
            "aud": "sts.amazonaws.com",
            "iss": "https://oidc.eks.example",
            "exp": now + exp_offset_secs,
        }))
    )
}

/// Runs the child with the web identity environment; returns (success, stdout + stderr).
async fn run_child(emu: &Emulator, token: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_uses_the_default_chain",
        "--include-ignored",
        "--nocapture",
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(CHILD, "1")
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", emu.url())
        .env("AWS_REGION", emu.region())
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ROLE_ARN", "arn:aws:iam::000000000000:role/uploader")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the child finished")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("WEB_IDENTITY_OK"),
        text,
    )
}

#[tokio::test]
async fn the_sdk_web_identity_provider_works_against_the_emulator() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("irsa-cam", 1).await.unwrap();
    let (ok, output) = run_child(&emu, &jwt(600)).await;
    assert!(ok, "{output}");
}

#[tokio::test]
async fn assume_role_and_assume_role_with_web_identity_answer_alike() {
    let emu = Emulator::builder().start().await.unwrap();
    let sts = aws_sdk_sts::Client::new(&emu.sdk_config());
    let role = "arn:aws:iam::000000000000:role/uploader";
    let plain = sts
        .assume_role()
        .role_arn(role)
        .role_session_name("plain")
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let web = sts
        .assume_role_with_web_identity()
        .role_arn(role)
        .role_session_name("web")
        .duration_seconds(900)
        .web_identity_token(jwt(600))
        .send()
        .await
        .unwrap();
    // Both results carry the same elements (the STS API reference lists PackedPolicySize for
    // both; the SDK marks the accessor deprecated, STS still sends it), and web identity adds
    // who the token named.
    #[allow(deprecated)]
    let packed = (plain.packed_policy_size(), web.packed_policy_size());
    assert_eq!(packed, (Some(0), Some(0)));
    for (creds, user, session) in [
        (plain.credentials(), plain.assumed_role_user(), "plain"),
        (web.credentials(), web.assumed_role_user(), "web"),
    ] {
        let c = creds.unwrap();
        assert!(c.access_key_id().starts_with("ASIA"));
        assert_eq!(c.secret_access_key().len(), 40);
        assert!(c.session_token().starts_with("EMU"));
        let user = user.unwrap();
        assert_eq!(
            user.arn(),
            format!("arn:aws:sts::123456789012:assumed-role/uploader/{session}")
        );
        assert!(user.assumed_role_id().ends_with(&format!(":{session}")));
    }
    let ttl = |c: Option<&aws_sdk_sts::types::Credentials>| {
        c.unwrap().expiration().secs()
            - aws_sdk_sts::primitives::DateTime::from(std::time::SystemTime::now()).secs()
    };
    assert!((890..=900).contains(&ttl(plain.credentials())));
    assert!((890..=900).contains(&ttl(web.credentials())));
    assert_eq!(
        web.subject_from_web_identity_token(),
        Some("system:serviceaccount:video:uploader")
    );
    assert_eq!(web.audience(), Some("sts.amazonaws.com"));
    assert_eq!(web.provider(), Some("https://oidc.eks.example"));
}

#[tokio::test]
async fn an_expired_web_identity_token_is_refused() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("irsa-cam", 1).await.unwrap();
    let (ok, output) = run_child(&emu, &jwt(-60)).await;
    assert!(!ok, "{output}");
    assert!(output.contains("ExpiredToken"), "{output}");
}

#[tokio::test]
#[ignore = "run by the tests above, in a child process with the web identity environment"]
async fn child_uses_the_default_chain() {
    if std::env::var_os(CHILD).is_none() {
        return; // run directly (e.g. --include-ignored): nothing to do without the environment
    }
    let conf = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let who = aws_sdk_sts::Client::new(&conf)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    let arn = who.arn().unwrap();
    assert!(arn.contains(":assumed-role/uploader/"), "{arn}");
    let streams = aws_sdk_kinesisvideo::Client::new(&conf)
        .list_streams()
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = streams
        .stream_info_list()
        .iter()
        .filter_map(|s| s.stream_name())
        .collect();
    assert_eq!(names, ["irsa-cam"]);
    println!("WEB_IDENTITY_OK {arn}");
}

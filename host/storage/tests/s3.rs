//! The storage layer against a real S3-compatible server (moto's, with authentication on):
//! a multipart upload and its download round-trip byte for byte with the digest taken on
//! the way; a prefix lists its objects; errors carry the store's code; a bad ETag is caught.

use plinth_storage::{ErrorKind, Location, S3Settings, Storage};
use plinth_tests::s3::S3;
use sha2::{Digest, Sha256};

fn storage(s3: &S3, secret: &str) -> Storage {
    let env: Vec<(String, String)> = vec![
        ("AWS_ACCESS_KEY_ID".into(), s3.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.to_owned()),
        ("AWS_REGION".into(), s3.region.clone()),
        ("AWS_ENDPOINT_URL_S3".into(), s3.endpoint.clone()),
    ];
    let settings = S3Settings::from_lookup(
        &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        None,
    )
    .unwrap();
    Storage::new(settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_round_trips_and_a_prefix_lists_it() {
    let Some(s3) = S3::shared("plinth_storage::s3::a_multipart_upload_round_trips") else {
        return;
    };
    let bucket = format!("storage-{}", std::process::id());
    s3.create_bucket(&bucket);
    let storage = storage(s3, &s3.secret_access_key);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("weights.bin");
    let bytes = plinth_tests::noise(20 << 20);
    std::fs::write(&source, &bytes).unwrap();
    let target = Location::parse(&format!("s3://{bucket}/models/big/weights.bin")).unwrap();
    assert_eq!(
        storage.upload(&source, &target).await.unwrap(),
        bytes.len() as u64
    );
    let small = Location::parse(&format!("s3://{bucket}/models/big/config.json")).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, b"{}").unwrap();
    storage.upload(&config, &small).await.unwrap();

    // Uploaded in parts: its ETag says how many (and is not an MD5, so not compared).
    let info = storage.head(&target).await.unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert!(
        info.etag.as_deref().is_some_and(|t| t.ends_with("-3")),
        "{info:?}"
    );
    let got = storage
        .download(&target, dir.path(), 1 << 30)
        .await
        .unwrap();
    assert_eq!(got.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(std::fs::read(got.file.path()).unwrap(), bytes);
    // A single-part object's ETag is its MD5, and it matched.
    let got = storage.download(&small, dir.path(), 1 << 30).await.unwrap();
    assert_eq!(std::fs::read(got.file.path()).unwrap(), b"{}");

    // One object put whole from memory, to S3 and to a local path.
    let put = Location::parse(&format!("s3://{bucket}/captured/put.jsonl")).unwrap();
    let lines = bytes::Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(storage.put(lines.clone(), &put).await.unwrap(), 16);
    let got = storage.download(&put, dir.path(), 1 << 20).await.unwrap();
    assert_eq!(std::fs::read(got.file.path()).unwrap(), lines);
    let local = dir.path().join("out/2026/put.jsonl");
    let at = Location::parse(local.to_str().unwrap()).unwrap();
    assert_eq!(storage.put(lines.clone(), &at).await.unwrap(), 16);
    assert_eq!(std::fs::read(&local).unwrap(), lines);
    // Read back whole, within a limit.
    assert_eq!(storage.get(&put, 1 << 20).await.unwrap(), lines);
    assert_eq!(storage.get(&at, 16).await.unwrap(), lines);
    assert_eq!(
        storage.get(&put, 15).await.unwrap_err().kind,
        ErrorKind::TooLarge
    );
    assert_eq!(
        storage.get(&at, 15).await.unwrap_err().kind,
        ErrorKind::TooLarge
    );

    let prefix = Location::parse(&format!("s3://{bucket}/models/big/")).unwrap();
    let listed = storage.list(&prefix).await.unwrap();
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        keys,
        [("config.json", 2), ("weights.bin", bytes.len() as u64)]
    );

    // Too large for the caller's limit: refused before the body is read whole.
    let e = storage
        .download(&target, dir.path(), 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);
}

#[tokio::test]
async fn errors_name_the_location_and_the_store_s_code() {
    let Some(s3) = S3::shared("plinth_storage::s3::errors") else {
        return;
    };
    let bucket = format!("errors-{}", std::process::id());
    s3.create_bucket(&bucket);
    s3.put_bytes(&bucket, "there", b"x");
    let good = storage(s3, &s3.secret_access_key);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (format!("s3://{bucket}/missing"), "NoSuchKey"),
        (format!("s3://{bucket}-absent/k"), "NoSuchBucket"),
    ];
    for (uri, code) in cases {
        let location = Location::parse(&uri).unwrap();
        for e in [
            good.head(&location).await.unwrap_err(),
            good.download(&location, dir.path(), 1 << 20)
                .await
                .unwrap_err(),
        ] {
            assert_eq!(
                (e.kind, e.code.as_deref()),
                (ErrorKind::NotFound, Some(code)),
                "{e}"
            );
            assert!(
                e.to_string().starts_with(&format!("{uri}: {code}: ")),
                "{e}"
            );
        }
    }
    let wrong = storage(s3, &format!("{}x", s3.secret_access_key));
    let there = Location::parse(&format!("s3://{bucket}/there")).unwrap();
    let e = wrong.head(&there).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
    assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"), "{e}");
    // An object replaced after its ETag was read is not taken for the old version.
    let old = good.head(&there).await.unwrap();
    s3.put_bytes(&bucket, "there", b"replaced");
    let e = good
        .download_version(&there, dir.path(), 1 << 20, old.etag.as_deref())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Changed, "{e}");
    let now = good.head(&there).await.unwrap();
    let got = good
        .download_version(&there, dir.path(), 1 << 20, now.etag.as_deref())
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.file.path()).unwrap(), b"replaced");
    drop(got);
    // Nothing is left behind in the download directory by the failures.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

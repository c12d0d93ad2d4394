//! Unit tests of the volume manager on disk-backed volumes in a private directory (tmpfs-backed
//! ones need mounts and are covered by the e2e tests).

use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn pod(volumes: Vec<Volume>, mounts: Vec<VolumeMount>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                volume_mounts: Some(mounts),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn empty_dir_on_disk_and_its_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(dir.path().to_path_buf(), None, None);
    let mut sub = mount("data", "/sub");
    sub.sub_path = Some("a/b".into());
    let mut ro = mount("data", "rel");
    ro.read_only = Some(true);
    let p = pod(vec![empty_dir("data")], vec![mount("data", "/data"), sub, ro]);
    vm.setup_pod(&p).await.unwrap();
    let vol = dir.path().join("pods/uid-1/volumes/kubernetes.io~empty-dir/data");
    assert!(vol.is_dir());
    assert_eq!(std::fs::metadata(&vol).unwrap().permissions().mode() & 0o777, 0o777);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let ms = vm.container_mounts(&p, c, &[]).unwrap();
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[0].container_path, "/data");
    assert_eq!(ms[0].host_path, vol.to_string_lossy());
    assert!(!ms[0].readonly);
    assert!(ms[0].selinux_relabel);
    // The subPath was made, with the volume root's mode.
    let real = std::fs::canonicalize(&vol).unwrap();
    assert_eq!(ms[1].host_path, real.join("a/b").to_string_lossy());
    assert_eq!(
        std::fs::metadata(real.join("a/b")).unwrap().permissions().mode() & 0o777,
        0o777
    );
    // Relative mount paths become absolute.
    assert_eq!(ms[2].container_path, "/rel");
    assert!(ms[2].readonly);
    // Teardown removes the volume.
    std::fs::write(vol.join("file"), "x").unwrap();
    vm.teardown_pod("uid-1").await.unwrap();
    assert!(!dir.path().join("pods/uid-1/volumes").exists());
    vm.teardown_pod("uid-1").await.unwrap();
}

#[tokio::test]
async fn host_path_checks_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    let vm = VolumeManager::new(dir.path().join("root"), None, None);
    let hp = |name: &str, path: &std::path::Path, kind: Option<&str>| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: kind.map(Into::into),
        }),
        ..Default::default()
    };
    let p = pod(
        vec![hp("made", &host, Some("DirectoryOrCreate"))],
        vec![mount("made", "/h")],
    );
    vm.setup_pod(&p).await.unwrap();
    assert!(host.is_dir());
    let ms = vm
        .container_mounts(&p, &p.spec.as_ref().unwrap().containers[0], &[])
        .unwrap();
    assert_eq!(ms[0].host_path, host.to_string_lossy());
    assert!(!ms[0].selinux_relabel);
    // A failing check names the volume and the kubelet's message.
    let missing = dir.path().join("missing");
    let p = pod(
        vec![hp("a", &missing, Some("Directory")), hp("b", &host, Some("File"))],
        vec![],
    );
    let err = vm.setup_pod(&p).await.unwrap_err();
    assert_eq!(err.names(), ["a", "b"]);
    assert_eq!(
        err.event_messages()[0],
        format!(
            "MountVolume.SetUp failed for volume \"a\" : hostPath type check failed: {} is not a directory",
            missing.display()
        )
    );
    // Teardown never touches host paths.
    vm.teardown_pod("uid-1").await.unwrap();
    assert!(host.is_dir());
}

#[tokio::test]
async fn configmap_without_client_and_unsupported_sources() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(dir.path().to_path_buf(), None, None);
    let cm = Volume {
        name: "cfg".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "x".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pvc = Volume {
        name: "claim".into(),
        persistent_volume_claim: Some(Default::default()),
        ..Default::default()
    };
    let err = vm.setup_pod(&pod(vec![cm, pvc], vec![])).await.unwrap_err();
    let msgs = err.event_messages();
    assert!(msgs[0].contains("kube client is not configured"), "{}", msgs[0]);
    assert!(
        msgs[1].contains("persistentVolumeClaim volumes are not supported"),
        "{}",
        msgs[1]
    );
    // Nothing was created for a volume whose contents could not be built.
    assert!(!dir
        .path()
        .join("pods/uid-1/volumes/kubernetes.io~configmap/cfg")
        .exists());
}

#[test]
fn mounts_of_unknown_volumes_and_bad_sub_paths() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(dir.path().to_path_buf(), None, None);
    let p = pod(vec![], vec![mount("nope", "/x")]);
    assert_eq!(
        vm.container_mounts(&p, &p.spec.as_ref().unwrap().containers[0], &[])
            .unwrap_err()
            .to_string(),
        "cannot find volume \"nope\" to mount into container \"c\""
    );
    let mut m = mount("data", "/x");
    m.sub_path = Some("../../etc".into());
    let p = pod(vec![empty_dir("data")], vec![m]);
    std::fs::create_dir_all(dir.path().join("pods/uid-1/volumes/kubernetes.io~empty-dir/data")).unwrap();
    assert_eq!(
        vm.container_mounts(&p, &p.spec.as_ref().unwrap().containers[0], &[])
            .unwrap_err()
            .to_string(),
        "unable to provision SubPath `../../etc`: must not contain '..'"
    );
}

#[test]
fn sub_path_expr_expansion() {
    let envs = vec![
        ("POD".to_string(), "web-1".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    let m = |expr: &str| VolumeMount {
        sub_path_expr: Some(expr.into()),
        ..Default::default()
    };
    assert_eq!(sub_path_of(&m("logs/$(POD)"), &envs).unwrap(), "logs/web-1");
    assert_eq!(sub_path_of(&m("$$(POD)"), &envs).unwrap(), "$(POD)");
    assert_eq!(
        sub_path_of(&m("$(NOPE)/$(EMPTY)/$(POD)"), &envs)
            .unwrap_err()
            .to_string(),
        "missing value for EMPTY, NOPE"
    );
    let plain = VolumeMount {
        sub_path: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(sub_path_of(&plain, &envs).unwrap(), "a");
}

#[test]
fn propagation_modes() {
    assert_eq!(propagation(None).unwrap(), cri::MountPropagation::PropagationPrivate);
    assert_eq!(
        propagation(Some("HostToContainer")).unwrap(),
        cri::MountPropagation::PropagationHostToContainer
    );
    assert_eq!(
        propagation(Some("Bidirectional")).unwrap(),
        cri::MountPropagation::PropagationBidirectional
    );
    assert!(propagation(Some("Sideways")).is_err());
}

fn with_memory_limits(limits: &[Option<&str>]) -> Pod {
    let mut p = pod(vec![], vec![]);
    let spec = p.spec.as_mut().unwrap();
    spec.containers = limits
        .iter()
        .enumerate()
        .map(|(i, l)| Container {
            name: format!("c{i}"),
            resources: l.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".to_string(), Quantity(l.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    p
}

#[test]
fn memory_volume_sizes() {
    // After empty_dir_test.go TestCalculateEmptyDirMemorySize.
    let alloc = BTreeMap::from([("memory".to_string(), Quantity("16Gi".into()))]);
    let gi = 1024_i128 * 1024 * 1024;
    let q = |s: &str| Quantity(s.into());
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[None]), &alloc, None),
        Some(16 * gi)
    );
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[Some("1Gi"), Some("2Gi")]), &alloc, None),
        Some(3 * gi)
    );
    // One container without a limit: the pod has none.
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[Some("1Gi"), None]), &alloc, None),
        Some(16 * gi)
    );
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[Some("4Gi")]), &alloc, Some(&q("1Gi"))),
        Some(gi)
    );
    // A sizeLimit above what the pod may use does not raise it.
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[Some("1Gi")]), &alloc, Some(&q("8Gi"))),
        Some(gi)
    );
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[None]), &BTreeMap::new(), Some(&q("64Mi"))),
        Some(64 * 1024 * 1024)
    );
    assert_eq!(
        memory_volume_size(&with_memory_limits(&[None]), &BTreeMap::new(), None),
        None
    );
}

#[test]
fn fs_user_only_when_all_agree() {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
    let mut p = with_memory_limits(&[None, None]);
    assert_eq!(fs_user(&p), None);
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    assert_eq!(fs_user(&p), Some(1000));
    p.spec.as_mut().unwrap().containers[1].security_context = Some(SecurityContext {
        run_as_user: Some(2000),
        ..Default::default()
    });
    assert_eq!(fs_user(&p), None);
}

#[tokio::test]
async fn orphaned_pod_directories_are_removed_whole_and_active_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(dir.path().to_path_buf(), None, None);
    let p = pod(vec![empty_dir("data")], vec![mount("data", "/data")]);
    vm.setup_pod(&p).await.unwrap();
    // What the sync loop writes besides volumes: a pod without volumes still has a directory.
    for (uid, sub) in [
        ("uid-1", "containers/c"),
        ("uid-2", "plugins"),
        ("uid-3", "containers/c"),
    ] {
        let d = dir.path().join("pods").join(uid).join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("termination-log"), "").unwrap();
    }
    vm.cleanup_orphans(&|uid: &str| uid == "uid-3").await;
    assert!(!dir.path().join("pods/uid-1").exists(), "orphan with volumes");
    assert!(!dir.path().join("pods/uid-2").exists(), "orphan without volumes");
    assert!(
        dir.path().join("pods/uid-3/containers/c/termination-log").exists(),
        "active pod"
    );
}

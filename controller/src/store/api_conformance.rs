//! The conformance suite of the typed store API: what `Api<K>` promises (see [`super::api`]), written
//! once and run for every kind over every store implementation.
//!
//! Test code compiled into the library, as [`super::conformance`] is, so that the embedded store's unit
//! tests, the etcd integration tests and a test's own toy kind can all run it. Each case takes a
//! namespace no other test uses and panics on a violation; every case tolerates other tests writing to
//! the same store at the same time.

use std::fmt::Debug;

use kedge_crds::{Container, ContainerSet, ContainerSetSpec, ContainerSpec, ContainerStatus, Resource};

use super::api::{Api, ApplyOutcome};
use super::{keys, Fence, PutCondition, Store, StoreError};

/// How the suite makes objects of one kind.
pub struct Fixture<K: Resource> {
    /// An object `namespace/name` whose spec is the `variant`th of at least three distinct specs.
    pub object: fn(namespace: &str, name: &str, variant: u32) -> K,
    /// A status, distinct for each `variant`.
    pub status: fn(variant: u32) -> K::Status,
}

/// Runs every case for Container and ContainerSet, in namespaces made from `unique` (any text that no
/// other run uses; it is made into key segments).
pub async fn run_every_kind(store: &dyn Store, unique: &str) {
    let unique = unique.replace('/', "-").trim_matches('-').to_owned();
    run(store, &format!("{unique}-containers"), &container_fixture()).await;
    run(store, &format!("{unique}-sets"), &set_fixture()).await;
}

/// Every case for kind `K` in `namespace` (and in `namespace` with `-b` appended).
pub async fn run<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
    K::Status: PartialEq + Debug,
{
    generation_rule(store, namespace, fixture).await;
    lists(store, namespace, fixture).await;
    dry_runs_answer_what_apply_does(store, namespace, fixture).await;
    deletes(store, namespace, fixture).await;
    statuses(store, namespace, fixture).await;
    fenced_writes(store, namespace, fixture).await;
    unreadable_objects(store, namespace, fixture).await;
}

/// Containers whose image is `busybox:<variant>`.
pub fn container_fixture() -> Fixture<Container> {
    Fixture {
        object: |namespace, name, variant| {
            let image = format!("busybox:{variant}").parse().expect("an image reference");
            let mut container = Container::new(name, ContainerSpec { image, ..ContainerSpec::default() });
            container.metadata.namespace = namespace.to_owned();
            container
        },
        status: |variant| ContainerStatus {
            observed_generation: Some(i64::from(variant)),
            ..Default::default()
        },
    }
}

/// ContainerSets of `variant + 1` replicas.
pub fn set_fixture() -> Fixture<ContainerSet> {
    Fixture {
        object: |namespace, name, variant| {
            let template = (container_fixture().object)(namespace, name, 1).spec;
            let spec = ContainerSetSpec {
                replicas: variant + 1,
                template: kedge_crds::ContainerTemplate { spec: template, ..Default::default() },
                placement: None,
                rolling_update: None,
            };
            let mut set = ContainerSet::new(name, spec);
            set.metadata.namespace = namespace.to_owned();
            set
        },
        status: |variant| kedge_crds::ContainerSetStatus { replicas: variant, ..Default::default() },
    }
}

fn revision<K: Resource>(object: &K) -> i64 {
    object.metadata().resource_version.as_deref().expect("a resourceVersion").parse().expect("a number")
}

/// Generation 1 on create, +1 only on a spec change; uid and creationTimestamp kept; resourceVersion
/// is the key's revision; an unchanged apply writes nothing; preconditions are compare-and-swap.
pub async fn generation_rule<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
    K::Status: PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let mut object = (fixture.object)(namespace, "gen", 0);
    object.metadata_mut().uid = Some("caller-chosen".into());
    object.metadata_mut().generation = Some(42);
    *object.status_mut() = Some((fixture.status)(1));

    let created = api.apply(&object, None).await.unwrap();
    assert_eq!(created.outcome, ApplyOutcome::Created, "{}", K::KIND);
    let meta = created.object.metadata().clone();
    assert_eq!(meta.generation, Some(1), "{}: generation starts at 1 whatever the caller sent", K::KIND);
    let uid = meta.uid.clone().expect("a uid");
    assert_ne!(uid, "caller-chosen", "{}", K::KIND);
    let created_at = meta.creation_timestamp.clone().expect("creationTimestamp set on create");
    let rv1 = revision(&created.object);
    let kv = store.get(&keys::object_key::<K>(namespace, "gen").unwrap()).await.unwrap().unwrap();
    assert_eq!(kv.mod_revision, rv1, "{}: resourceVersion is the key's mod_revision", K::KIND);
    let stored = api.get(namespace, "gen").await.unwrap().expect("just created");
    assert_eq!(stored.status(), None, "{}: status is never stored with the object", K::KIND);
    assert_eq!(stored, created.object, "{}: get answers what apply answered", K::KIND);

    let again = api.apply(&object, None).await.unwrap();
    assert_eq!((again.outcome, revision(&again.object)), (ApplyOutcome::Unchanged, rv1), "{}", K::KIND);

    object.metadata_mut().labels.insert("team".into(), "a".into());
    let labelled = api.apply(&object, None).await.unwrap();
    assert_eq!(labelled.outcome, ApplyOutcome::Updated { spec_changed: false }, "{}", K::KIND);
    assert_eq!(
        labelled.object.metadata().generation,
        Some(1),
        "{}: metadata is not a new generation",
        K::KIND
    );
    let rv2 = revision(&labelled.object);
    assert!(rv2 > rv1);

    let mut changed = (fixture.object)(namespace, "gen", 1);
    changed.metadata_mut().labels.insert("team".into(), "a".into());
    let updated = api.apply(&changed, None).await.unwrap();
    assert_eq!(updated.outcome, ApplyOutcome::Updated { spec_changed: true }, "{}", K::KIND);
    let meta = updated.object.metadata();
    assert_eq!(meta.generation, Some(2), "{}", K::KIND);
    assert_eq!(meta.uid.as_deref(), Some(uid.as_str()), "{}: the uid is kept", K::KIND);
    assert_eq!(meta.creation_timestamp.as_deref(), Some(created_at.as_str()), "{}", K::KIND);
    let rv3 = revision(&updated.object);

    let third = (fixture.object)(namespace, "gen", 2);
    match api.apply(&third, Some(rv2)).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, rv3),
        other => panic!("{}: apply with a stale resourceVersion: {other:?}", K::KIND),
    }
    match api.apply(&third, Some(0)).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, rv3),
        other => panic!("{}: create-only apply over an existing object: {other:?}", K::KIND),
    }
    let cas = api.apply(&third, Some(rv3)).await.unwrap();
    assert_eq!(cas.object.metadata().generation, Some(3), "{}", K::KIND);
    let fresh = api.apply(&(fixture.object)(namespace, "gen-new", 0), Some(0)).await.unwrap();
    assert_eq!(fresh.outcome, ApplyOutcome::Created, "{}", K::KIND);
}

/// Lists are sorted, scoped to their namespace (`ns` never lists `ns-b`), and read at a revision no
/// older than what they hold.
pub async fn lists<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let neighbour = format!("{namespace}-b");
    for name in ["list-b", "list-a"] {
        api.apply(&(fixture.object)(namespace, name, 0), None).await.unwrap();
    }
    api.apply(&(fixture.object)(&neighbour, "list-c", 0), None).await.unwrap();
    let list = api.list(Some(namespace)).await.unwrap();
    let names: Vec<&str> = list.items.iter().map(|o| o.metadata().name.as_str()).collect();
    let listed: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("list-")).collect();
    assert_eq!(listed, ["list-a", "list-b"], "{}: sorted, and only this namespace", K::KIND);
    assert!(list.items.iter().all(|o| o.metadata().namespace == namespace && o.status().is_none()));
    assert!(list.revision >= list.items.iter().map(revision).max().unwrap(), "{}", K::KIND);
    let all = api.list(None).await.unwrap();
    assert!(all.items.iter().any(|o| o.metadata().namespace == neighbour), "{}: every namespace", K::KIND);
}

/// One edit of an object in a sequence of applies.
type Change<K> = fn(&mut K, &Fixture<K>);

/// A dry run answers the outcome and generation the apply then has, and writes nothing.
pub async fn dry_runs_answer_what_apply_does<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let key = keys::object_key::<K>(namespace, "dry").unwrap();
    let mut object = (fixture.object)(namespace, "dry", 0);
    let steps: [(&str, Change<K>); 4] = [
        ("create", |_, _| {}),
        ("the same again", |_, _| {}),
        ("a label", |o, _| {
            o.metadata_mut().labels.insert("tier".into(), "web".into());
        }),
        ("a spec change", |o, f| {
            let labels = o.metadata().labels.clone();
            *o = (f.object)(&o.metadata().namespace, &o.metadata().name, 1);
            o.metadata_mut().labels = labels;
        }),
    ];
    for (step, change) in steps {
        change(&mut object, fixture);
        let before = store.get(&key).await.unwrap().map(|kv| kv.mod_revision);
        let dry = api.dry_run(&object, None).await.unwrap();
        assert_eq!(
            store.get(&key).await.unwrap().map(|kv| kv.mod_revision),
            before,
            "{}: {step}: a dry run writes",
            K::KIND
        );
        assert_eq!(
            dry.object.metadata().resource_version,
            before.map(|r| r.to_string()),
            "{}: {step}",
            K::KIND
        );
        let done = api.apply(&object, None).await.unwrap();
        assert_eq!(dry.outcome, done.outcome, "{}: {step}: the dry run's outcome", K::KIND);
        assert_eq!(
            dry.object.metadata().generation,
            done.object.metadata().generation,
            "{}: {step}",
            K::KIND
        );
        assert_eq!(dry.object.spec_json(), done.object.spec_json(), "{}: {step}", K::KIND);
    }
    let stale = revision(&api.get(namespace, "dry").await.unwrap().unwrap()) - 1;
    assert!(
        matches!(api.dry_run(&object, Some(stale)).await, Err(StoreError::Conflict { .. })),
        "{}: a dry run with a stale resourceVersion is the apply's conflict",
        K::KIND
    );
}

/// Deletes: preconditions, dry runs, `None` for nothing to delete, and a new incarnation after.
pub async fn deletes<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let first = api.apply(&(fixture.object)(namespace, "del", 0), None).await.unwrap().object;
    let rv = revision(&first);
    assert!(matches!(api.delete(namespace, "del", Some(rv - 1)).await, Err(StoreError::Conflict { .. })));
    assert!(matches!(
        api.delete_dry_run(namespace, "del", Some(rv - 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(api.delete_dry_run(namespace, "del", Some(rv)).await.unwrap(), Some(rv), "{}", K::KIND);
    assert!(api.get(namespace, "del").await.unwrap().is_some(), "{}: a dry run deletes nothing", K::KIND);
    assert!(api.delete(namespace, "del", Some(rv)).await.unwrap().is_some());
    assert_eq!(api.get(namespace, "del").await.unwrap(), None, "{}", K::KIND);
    assert_eq!(api.delete(namespace, "del", None).await.unwrap(), None, "{}: nothing to delete", K::KIND);
    assert_eq!(api.delete_dry_run(namespace, "del", None).await.unwrap(), None, "{}", K::KIND);
    let again = api.apply(&(fixture.object)(namespace, "del", 0), None).await.unwrap();
    assert_eq!((again.outcome, again.object.metadata().generation), (ApplyOutcome::Created, Some(1)));
    assert_ne!(
        again.object.metadata().uid,
        first.metadata().uid,
        "{}: a new incarnation, a new uid",
        K::KIND
    );
}

/// A status lives apart from the object: writing it never touches the object, and reads merge it in.
pub async fn statuses<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
    K::Status: PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let object = api.apply(&(fixture.object)(namespace, "st", 0), None).await.unwrap().object;
    assert_eq!(api.get_status(namespace, "st").await.unwrap(), None, "{}", K::KIND);
    let status = (fixture.status)(1);
    let written = api.put_status(namespace, "st", &status, PutCondition::Absent).await.unwrap();
    assert_eq!(
        api.get_status(namespace, "st").await.unwrap(),
        Some((status.clone(), written)),
        "{}",
        K::KIND
    );
    assert_eq!(
        api.get(namespace, "st").await.unwrap().as_ref(),
        Some(&object),
        "{}: the object is untouched",
        K::KIND
    );
    let merged = api.get_with_status(namespace, "st").await.unwrap().unwrap();
    assert_eq!(merged.status(), Some(&status), "{}", K::KIND);
    let listed = api.list_with_status(Some(namespace)).await.unwrap();
    let listed = listed.items.iter().find(|o| o.metadata().name == "st").expect("listed");
    assert_eq!(listed.status(), Some(&status), "{}: a list merges statuses in", K::KIND);
    let next = (fixture.status)(2);
    let stale = api.put_status(namespace, "st", &next, PutCondition::ModRevision(written - 1)).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{}: {stale:?}", K::KIND);
    api.put_status(namespace, "st", &next, PutCondition::ModRevision(written)).await.unwrap();
    assert_eq!(api.get_status(namespace, "st").await.unwrap().map(|(s, _)| s), Some(next), "{}", K::KIND);
}

/// Fenced writes land only while the fence holds, with the generation rule of a plain apply.
pub async fn fenced_writes<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
    K::Status: PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let leader = format!("/kedge-test/api-fence/{namespace}/{}", K::PLURAL);
    let term = store.put(&leader, b"a".to_vec(), PutCondition::Absent, 0).await.unwrap();
    let fence = Fence { key: &leader, mod_revision: term };
    let object = (fixture.object)(namespace, "fenced", 0);
    let created = api.apply_fenced(fence, &object, None).await.unwrap().expect("written");
    assert_eq!((created.outcome, created.object.metadata().generation), (ApplyOutcome::Created, Some(1)));
    assert!(
        api.apply_fenced(fence, &object, Some(&created.object)).await.unwrap().is_none(),
        "nothing to write"
    );
    let status = (fixture.status)(1);
    api.put_status_fenced(fence, namespace, "fenced", &status, PutCondition::Always).await.unwrap();

    let successor = store.put(&leader, b"b".to_vec(), PutCondition::Always, 0).await.unwrap();
    let changed = (fixture.object)(namespace, "fenced", 1);
    match api.apply_fenced(fence, &changed, Some(&created.object)).await {
        Err(StoreError::Conflict { key, current_mod_revision }) => {
            assert_eq!((key.as_str(), current_mod_revision), (leader.as_str(), successor), "{}", K::KIND)
        }
        other => panic!("{}: a write under a stale fence: {other:?}", K::KIND),
    }
    let stale =
        api.put_status_fenced(fence, namespace, "fenced", &(fixture.status)(2), PutCondition::Always).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{}: {stale:?}", K::KIND);
    assert_eq!(
        api.get(namespace, "fenced").await.unwrap().as_ref(),
        Some(&created.object),
        "no stale write landed"
    );
    let fence = Fence { key: &leader, mod_revision: successor };
    let updated = api.apply_fenced(fence, &changed, Some(&created.object)).await.unwrap().expect("written");
    assert_eq!(updated.outcome, ApplyOutcome::Updated { spec_changed: true }, "{}", K::KIND);
    assert_eq!(updated.object.metadata().generation, Some(2), "{}", K::KIND);
    store.delete(&leader, super::DeleteCondition::Always).await.unwrap();
}

/// An unreadable stored object is carried apart by lists, named by `get_or_invalid`, an error for
/// `get`, and replaced as new by an apply.
pub async fn unreadable_objects<K>(store: &dyn Store, namespace: &str, fixture: &Fixture<K>)
where
    K: Resource + PartialEq + Debug,
{
    let api = Api::<K, _>::new(store);
    let key = keys::object_key::<K>(namespace, "bad").unwrap();
    let written = store.put(&key, br#"{"kind": 7}"#.to_vec(), PutCondition::Always, 0).await.unwrap();
    let list = api.list(Some(namespace)).await.unwrap();
    let invalid: Vec<_> = list.invalid.iter().filter(|i| i.name == "bad").collect();
    assert_eq!(invalid.len(), 1, "{}: {:?}", K::KIND, list.invalid);
    assert_eq!(invalid[0].resource_version, written.to_string());
    assert!(!list.items.iter().any(|o| o.metadata().name == "bad"));
    assert!(matches!(api.get(namespace, "bad").await, Err(StoreError::Corrupt(_))), "{}", K::KIND);
    assert!(matches!(api.get_or_invalid(namespace, "bad").await, Ok(Some(Err(_)))), "{}", K::KIND);
    let dry = api.dry_run(&(fixture.object)(namespace, "bad", 0), None).await.unwrap();
    assert_eq!(dry.outcome, ApplyOutcome::Created, "{}: a dry run over an unreadable object", K::KIND);
    let repaired = api.apply(&(fixture.object)(namespace, "bad", 0), None).await.unwrap();
    assert_eq!((repaired.outcome, repaired.object.metadata().generation), (ApplyOutcome::Created, Some(1)));
}

/// The spec of an object, serialized: what the generation rule compares.
trait SpecJson {
    fn spec_json(&self) -> Option<serde_json::Value>;
}

impl<K: Resource> SpecJson for K {
    fn spec_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.spec()).ok()
    }
}

//! Kubernetes adapter over kube-rs: discovery (apiVersion/kind → resource and scope),
//! server-side apply with each App's field manager (`gitfleet/<app>`, see
//! [`crate::sync::ownership`]), and reading objects back for health.
//!
//! Errors are per object: a kind the server does not know, or an object it rejects, becomes a
//! [`ClusterError`] with the server's own words, and the caller carries on with the others.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::RwLock;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::Value;

use crate::model::ObjectRef;
use crate::sync::prune::Inventory;
use crate::sync::render::{ANNOTATION_TARGET, LABEL_APP, Manifest};

/// Field manager of the inventory ConfigMaps (only gitfleet writes them); an App's objects are
/// applied with the App's own manager.
pub const FIELD_MANAGER: &str = crate::sync::ownership::LEGACY_FIELD_MANAGER;

/// Where the spoke's Kubernetes client configuration comes from.
#[derive(Clone)]
pub enum KubeSource {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
    /// `KUBECONFIG`/`~/.kube/config`, else in-cluster.
    Infer,
    Config(Box<kube::Config>),
    /// A client built elsewhere, on any transport kube-rs accepts (a simulator's in-memory
    /// connection to its API server).
    Client(kube::Client),
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubeconfig { path, context } => f
                .debug_struct("Kubeconfig")
                .field("path", path)
                .field("context", context)
                .finish(),
            Self::InCluster => f.write_str("InCluster"),
            Self::Infer => f.write_str("Infer"),
            Self::Config(config) => f.debug_tuple("Config").field(&config.cluster_url).finish(),
            Self::Client(_) => f.write_str("Client"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error("the server does not know kind {kind} in {api_version}{}", detail(.message))]
    UnknownKind {
        api_version: String,
        kind: String,
        message: String,
    },
    #[error("{message}")]
    Rejected {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("talking to the cluster: {0}")]
    Transport(String),
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl ClusterError {
    fn from_kube(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::Rejected {
                code: status.code,
                reason: status.reason.clone(),
                message: if status.message.is_empty() {
                    status.reason.clone()
                } else {
                    status.message.clone()
                },
            },
            other => Self::Transport(crate::identity::error_chain(&other)),
        }
    }
}

/// Builds a kube client configuration from where the spoke was told to find it.
pub async fn load_config(source: &KubeSource) -> Result<kube::Config, ClusterError> {
    let err = |e: &dyn std::error::Error| ClusterError::Config(e.to_string());
    match source {
        KubeSource::Kubeconfig { path, context } => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| err(&e))
        }
        KubeSource::InCluster => kube::Config::incluster().map_err(|e| err(&e)),
        KubeSource::Infer => kube::Config::infer().await.map_err(|e| err(&e)),
        KubeSource::Config(config) => Ok((**config).clone()),
        KubeSource::Client(_) => Err(ClusterError::Config(
            "a ready-made client has no kube config to load".into(),
        )),
    }
}

/// A resolved kind: how to address it and whether it is namespaced.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// What a successful apply returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub resource_version: String,
    /// The object as the server stored it.
    pub object: Value,
}

/// The object a delete is meant for, as the caller last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Precondition {
    /// The uid and resourceVersion of `live`, an object as [`Cluster::get`] returned it.
    pub fn of(live: &Value) -> Self {
        let field = |name: &str| {
            live.pointer(&format!("/metadata/{name}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            uid: field("uid"),
            resource_version: field("resourceVersion"),
        }
    }
}

/// What a delete came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// There was nothing under that name.
    AlreadyGone,
    /// The object under that name is not the one the caller read (the server's message).
    Changed(String),
}

/// One cluster, with a discovery cache.
pub struct Cluster {
    client: Client,
    kinds: RwLock<HashMap<(String, String), Resolved>>,
}

impl Cluster {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            kinds: RwLock::new(HashMap::new()),
        }
    }

    pub async fn connect(source: &KubeSource) -> Result<Self, ClusterError> {
        if let KubeSource::Client(client) = source {
            return Ok(Self::new(client.clone()));
        }
        let config = load_config(source).await?;
        let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Self::new(client))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Scopes learned so far, for the renderer: (apiVersion, kind) → namespaced.
    pub fn known_scopes(&self) -> BTreeMap<(String, String), bool> {
        let kinds = self
            .kinds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kinds
            .iter()
            .map(|(k, v)| (k.clone(), v.namespaced))
            .collect()
    }

    /// Resolves a kind, asking the server when it is not cached (so a kind whose CRD was just
    /// applied is found on the next try).
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Resolved, ClusterError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .kinds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let unknown = |message: String| ClusterError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            message,
        };
        let (resource, capabilities) = match kube::discovery::pinned_kind(&self.client, &gvk).await
        {
            Ok(found) => found,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(unknown(status.message.clone()));
            }
            Err(kube::Error::Discovery(_)) => return Err(unknown(String::new())),
            Err(other) => return Err(ClusterError::from_kube(other)),
        };
        let resolved = Resolved {
            resource,
            namespaced: capabilities.scope == Scope::Namespaced,
        };
        self.kinds
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, resolved.clone());
        Ok(resolved)
    }

    fn api(&self, resolved: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if resolved.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &resolved.resource)
        } else {
            Api::all_with(self.client.clone(), &resolved.resource)
        }
    }

    /// Server-side applies one object whose scope `resolved` describes, as field manager
    /// `manager`.
    pub async fn apply(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        manager: &str,
        force: bool,
    ) -> Result<Applied, ClusterError> {
        self.server_side_apply(resolved, manifest, manager, force, false)
            .await
    }

    /// [`Cluster::apply`] with `dryRun=All`: the object as the server would make it, nothing
    /// stored (`gitfleet diff --live`).
    pub async fn apply_dry_run(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        manager: &str,
        force: bool,
    ) -> Result<Applied, ClusterError> {
        self.server_side_apply(resolved, manifest, manager, force, true)
            .await
    }

    async fn server_side_apply(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<Applied, ClusterError> {
        let namespace = if manifest.object.namespace.is_empty() {
            "default"
        } else {
            &manifest.object.namespace
        };
        let api = self.api(resolved, namespace);
        let mut params = PatchParams::apply(manager);
        if force {
            params = params.force();
        }
        params.dry_run = dry_run;
        let applied = api
            .patch(
                &manifest.object.name,
                &params,
                &Patch::Apply(&manifest.body),
            )
            .await
            .map_err(ClusterError::from_kube)?;
        let resource_version = applied
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let object =
            serde_json::to_value(applied).map_err(|e| ClusterError::Transport(e.to_string()))?;
        Ok(Applied {
            resource_version,
            object,
        })
    }

    /// Creates one object (POST) as field manager `manager`: the way to make an object named by
    /// the server (`metadata.generateName`), which server-side apply cannot. Returns the object
    /// as stored, its name chosen.
    pub async fn create(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        manager: &str,
    ) -> Result<Applied, ClusterError> {
        let namespace = if manifest.object.namespace.is_empty() {
            "default"
        } else {
            &manifest.object.namespace
        };
        let object: DynamicObject = serde_json::from_value(manifest.body.clone())
            .map_err(|e| ClusterError::Transport(format!("encoding the object: {e}")))?;
        let params = PostParams {
            field_manager: Some(manager.to_owned()),
            ..PostParams::default()
        };
        let created = self
            .api(resolved, namespace)
            .create(&params, &object)
            .await
            .map_err(ClusterError::from_kube)?;
        let resource_version = created
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let object =
            serde_json::to_value(created).map_err(|e| ClusterError::Transport(e.to_string()))?;
        Ok(Applied {
            resource_version,
            object,
        })
    }

    /// Renames entry `index` of `live`'s `metadata.managedFields` to manager `to`, so that `to`
    /// owns what the entry's manager applied (how a field manager is migrated, as `kubectl`'s
    /// client-side to server-side upgrade does). The patch carries `live`'s resourceVersion, so
    /// it changes nothing when the object moved on since it was read: the server refuses it,
    /// and the apply that follows meets the old manager's fields as a conflict, which is
    /// reported, never a silent loss.
    pub async fn rename_manager(
        &self,
        resolved: &Resolved,
        object: &ObjectRef,
        live: &Value,
        index: usize,
        to: &str,
    ) -> Result<(), ClusterError> {
        let namespace = if object.namespace.is_empty() {
            "default"
        } else {
            &object.namespace
        };
        let mut entries = live
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        match entries.get_mut(index).and_then(Value::as_object_mut) {
            Some(entry) => {
                entry.insert("manager".into(), Value::String(to.to_owned()));
            }
            None => return Ok(()),
        }
        let resource_version = live
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        // A merge patch replaces a list whole: managedFields is written as read, but for the
        // one manager's name.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version, "managedFields": entries}
        });
        self.api(resolved, namespace)
            .patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(ClusterError::from_kube)
    }

    /// Reads an object back as JSON; `None` when it does not exist.
    pub async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let resolved = self.resolve(&object.api_version, &object.kind).await?;
        let namespace = if object.namespace.is_empty() {
            "default"
        } else {
            &object.namespace
        };
        let found = self
            .api(&resolved, namespace)
            .get_opt(&object.name)
            .await
            .map_err(ClusterError::from_kube)?;
        let Some(found) = found else { return Ok(None) };
        let mut value =
            serde_json::to_value(found).map_err(|e| ClusterError::Transport(e.to_string()))?;
        // Health needs the type even where a server leaves it out of single-object reads.
        if let Value::Object(fields) = &mut value {
            fields
                .entry("apiVersion")
                .or_insert_with(|| Value::String(object.api_version.clone()));
            fields
                .entry("kind")
                .or_insert_with(|| Value::String(object.kind.clone()));
        }
        Ok(Some(value))
    }

    /// Deletes an object (background propagation). With `expected`, only the very object the
    /// caller read: the server refuses (409 Conflict) when the object under that name has
    /// another uid (deleted and created again) or another resourceVersion (changed since), and
    /// that refusal is [`Deletion::Changed`], not an error.
    pub async fn delete(
        &self,
        object: &ObjectRef,
        expected: Option<&Precondition>,
    ) -> Result<Deletion, ClusterError> {
        let resolved = self.resolve(&object.api_version, &object.kind).await?;
        let namespace = if object.namespace.is_empty() {
            "default"
        } else {
            &object.namespace
        };
        let mut params = DeleteParams::background();
        if let Some(expected) = expected {
            params = params.preconditions(Preconditions {
                uid: expected.uid.clone(),
                resource_version: expected.resource_version.clone(),
            });
        }
        match self
            .api(&resolved, namespace)
            .delete(&object.name, &params)
            .await
        {
            Ok(_) => Ok(Deletion::Deleted),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deletion::AlreadyGone),
            Err(kube::Error::Api(status)) if status.code == 409 && expected.is_some() => {
                Ok(Deletion::Changed(status.message.clone()))
            }
            Err(other) => Err(ClusterError::from_kube(other)),
        }
    }

    /// The inventory of a Target (`None` when it has none yet).
    pub async fn read_inventory(
        &self,
        target: &InventoryRef,
    ) -> Result<Option<Inventory>, ClusterError> {
        let Some(live) = self.get(&target.object()).await? else {
            return Ok(None);
        };
        let revision = live
            .pointer("/data/revision")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let objects = match live.pointer("/data/objects").and_then(Value::as_str) {
            Some(json) => serde_json::from_str(json).map_err(|e| ClusterError::Rejected {
                code: 0,
                reason: "InvalidInventory".into(),
                message: format!(
                    "inventory {}/{} is not valid: {e}",
                    target.namespace,
                    target.name()
                ),
            })?,
            None => Vec::new(),
        };
        Ok(Some(Inventory { revision, objects }))
    }

    /// Records the inventory of a Target in its ConfigMap (server-side apply, forced: only
    /// gitfleet writes it).
    pub async fn write_inventory(
        &self,
        target: &InventoryRef,
        inventory: &Inventory,
    ) -> Result<(), ClusterError> {
        let objects = serde_json::to_string(&inventory.objects)
            .map_err(|e| ClusterError::Transport(e.to_string()))?;
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": target.name(),
                "namespace": target.namespace,
                "labels": {LABEL_APP: target.app, "gitfleet.dev/inventory": "true"},
                "annotations": {ANNOTATION_TARGET: target.target_id},
            },
            "data": {"revision": inventory.revision, "objects": objects},
        });
        let manifest = Manifest {
            object: target.object(),
            body,
            source_file: String::new(),
        };
        let resolved = self.resolve("v1", "ConfigMap").await?;
        self.apply(&resolved, &manifest, FIELD_MANAGER, true)
            .await
            .map(|_| ())
    }

    pub async fn delete_inventory(&self, target: &InventoryRef) -> Result<(), ClusterError> {
        self.delete(&target.object(), None).await.map(|_| ())
    }
}

/// Where a Target's inventory lives: ConfigMap `gitfleet-inventory-<target>` in the App's
/// namespace, so that it survives the spoke losing its disk.
#[derive(Debug, Clone)]
pub struct InventoryRef {
    pub app: String,
    pub target_id: String,
    pub namespace: String,
}

impl InventoryRef {
    pub fn new(app: &str, target_id: &str, namespace: &str) -> Self {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        Self {
            app: app.to_owned(),
            target_id: target_id.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    pub fn name(&self) -> String {
        format!("gitfleet-inventory-{}", self.target_id)
    }

    pub fn object(&self) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: self.namespace.clone(),
            name: self.name(),
        }
    }
}

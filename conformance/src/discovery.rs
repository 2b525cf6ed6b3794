//! What an Open Inference target serves, asked before checking it: server
//! metadata (its extensions), the repository index where it offers one,
//! and the metadata of each model the suite could use: the defaults of
//! every role, the profile's models and the index's (at most
//! [`MAX_MODELS`] in all). Identity-like models are picked out of the
//! metadata by their signature, so that round trips run through whatever
//! identities the server has, for exactly the types and shapes they
//! declare.

use std::collections::{BTreeMap, BTreeSet};

use serving_client::{Client, ModelMetadata, RepositoryModel};
use serving_proto::DataType;

use crate::profile::{Profile, Role};

/// The most models whose metadata discovery asks for.
pub const MAX_MODELS: usize = 64;

/// One input of an identity-like model and the output it comes back as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The input's name.
    pub input: String,
    /// The output's name.
    pub output: String,
    /// The declared shape (-1: variable).
    pub dims: Vec<i64>,
}

/// `dims` made concrete: the first variable dimension (a batched model's
/// rows) is `first`, every other variable one `rest`.
pub fn fill(dims: &[i64], first: i64, rest: i64) -> Vec<i64> {
    let mut first = Some(first);
    dims.iter()
        .map(|&d| match d < 0 {
            true => first.take().unwrap_or(rest),
            false => d,
        })
        .collect()
}

/// A model whose signature is an identity's: as many outputs as inputs,
/// each of its input's type and shape, all of one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityModel {
    /// The model's name.
    pub name: String,
    /// Its type.
    pub dtype: DataType,
    /// Its inputs, in order.
    pub pairs: Vec<Pair>,
    /// The most rows a request may carry, where the first dimension is a
    /// batch of rows (the model's configuration says so: `max_batch_size`
    /// > 0); `None` where it is not.
    pub max_rows: Option<usize>,
}

impl IdentityModel {
    /// Whether the first dimension is a batch of rows (at least one, at
    /// most `max_rows`).
    pub fn batched(&self) -> bool {
        self.max_rows.is_some()
    }

    /// `wanted` rows as a request may carry them: for a batched model at
    /// least one and at most `max_rows`; otherwise as given.
    pub fn rows(&self, wanted: i64) -> i64 {
        match self.max_rows {
            Some(max) => wanted.clamp(1, max.max(1) as i64),
            None => wanted,
        }
    }

    /// Whether a request may carry `shape` as far as rows go.
    pub fn fits(&self, shape: &[i64]) -> bool {
        shape.first().is_none_or(|&r| self.rows(r) == r)
    }

    /// The identity signature of `meta`, if it has one.
    pub fn of(meta: &ModelMetadata) -> Option<IdentityModel> {
        let first = meta.inputs.first()?;
        let dtype = DataType::from_oip_name(&first.datatype)?;
        if meta.inputs.len() != meta.outputs.len() {
            return None;
        }
        let pairs = meta
            .inputs
            .iter()
            .zip(&meta.outputs)
            .map(|(i, o)| {
                (i.datatype == first.datatype && o.datatype == i.datatype && o.shape == i.shape)
                    .then(|| Pair {
                        input: i.name.clone(),
                        output: o.name.clone(),
                        dims: i.shape.clone(),
                    })
            })
            .collect::<Option<Vec<Pair>>>()?;
        Some(IdentityModel {
            name: meta.name.clone(),
            dtype,
            pairs,
            max_rows: None,
        })
    }
}

/// What one target serves.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    /// The extensions its server metadata lists.
    pub extensions: Vec<String>,
    /// The models its repository index lists, when it offers one, with
    /// their entries (state and reason).
    pub index: Option<BTreeMap<String, RepositoryModel>>,
    /// The metadata of every model found, by name.
    pub models: BTreeMap<String, ModelMetadata>,
    /// The models whose configuration (Triton's extension, where offered)
    /// says they batch, with their `max_batch_size`.
    pub batched: BTreeMap<String, usize>,
}

impl Capabilities {
    /// Asks `client`'s server.
    pub async fn discover(client: &Client, profile: &Profile) -> Capabilities {
        let extensions = client
            .server_metadata()
            .await
            .map(|m| m.extensions)
            .unwrap_or_default();
        let index = client.repository_index(false).await.ok().map(|models| {
            models
                .into_iter()
                .map(|m| (m.name.clone(), m))
                .collect::<BTreeMap<_, _>>()
        });
        let mut names: Vec<String> = Vec::new();
        for role in Role::all() {
            names.push(profile.model(role).unwrap_or(&role.key()).to_owned());
        }
        names.extend(index.iter().flat_map(|i| i.keys().cloned()));
        let mut seen = BTreeSet::new();
        names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
        names.truncate(MAX_MODELS);
        let mut models = BTreeMap::new();
        let mut batched = BTreeMap::new();
        for name in names {
            if let Ok(meta) = client.model_metadata(&name, None).await {
                if IdentityModel::of(&meta).is_some()
                    && let Ok(c) = client.model_config(&name, None).await
                    && c.max_batch_size > 0
                {
                    batched.insert(name.clone(), c.max_batch_size as usize);
                }
                models.insert(name, meta);
            }
        }
        Capabilities {
            extensions,
            index,
            models,
            batched,
        }
    }

    /// Whether the server serves `model` (its metadata answered).
    pub fn serves(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// The repository index's entry of `model`, when the index lists it
    /// as not ready (it is in the repository but failed to load).
    pub fn unavailable(&self, model: &str) -> Option<&RepositoryModel> {
        self.index
            .as_ref()?
            .get(model)
            .filter(|m| !m.state.eq_ignore_ascii_case("READY"))
    }

    /// Whether the server advertises `extension`.
    pub fn advertises(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// The identity signature of `model`, if it has one.
    pub fn identity(&self, model: &str) -> Option<IdentityModel> {
        let mut m = IdentityModel::of(self.models.get(model)?)?;
        m.max_rows = self.batched.get(model).copied();
        Some(m)
    }

    /// The identity-like models of type `dtype`, by name.
    pub fn identities(&self, dtype: DataType) -> Vec<IdentityModel> {
        self.models
            .keys()
            .filter_map(|name| self.identity(name))
            .filter(|m| m.dtype == dtype)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serving_client::TensorMetadata;

    fn t(name: &str, datatype: &str, shape: &[i64]) -> TensorMetadata {
        TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn identity_signatures() {
        let echo = ModelMetadata {
            name: "echo".into(),
            inputs: vec![t("in", "INT64", &[-1, 3])],
            outputs: vec![t("out", "INT64", &[-1, 3])],
            ..Default::default()
        };
        let m = IdentityModel::of(&echo).unwrap();
        assert_eq!(m.dtype, DataType::Int64);
        assert_eq!(m.pairs[0].output, "out");
        assert_eq!(m.pairs[0].dims, vec![-1, 3]);
        assert_eq!(fill(&[-1, 3, -1, -1], 5, 1), vec![5, 3, 1, 1]);
        assert_eq!(fill(&[2, 2], 5, 1), vec![2, 2]);
        // Unbatched: rows as given; batched: 1 to max_rows.
        assert!(!m.batched());
        assert_eq!((m.rows(0), m.rows(9)), (0, 9));
        let batched = IdentityModel {
            max_rows: Some(4),
            ..m.clone()
        };
        assert!(batched.batched());
        assert_eq!(
            (batched.rows(0), batched.rows(3), batched.rows(9)),
            (1, 3, 4)
        );
        assert!(batched.fits(&[4, 3]) && !batched.fits(&[5, 3]) && !batched.fits(&[0, 3]));
        assert!(m.fits(&[5, 3]) && batched.fits(&[]));
        let add = ModelMetadata {
            name: "add".into(),
            inputs: vec![t("x1", "FP32", &[2, 2]), t("x2", "FP32", &[2, 2])],
            outputs: vec![t("y", "FP32", &[2, 2])],
            ..Default::default()
        };
        assert_eq!(IdentityModel::of(&add), None);
        let cast = ModelMetadata {
            inputs: vec![t("x", "INT32", &[-1])],
            outputs: vec![t("y", "FP32", &[-1])],
            ..Default::default()
        };
        assert_eq!(IdentityModel::of(&cast), None);
        let caps = Capabilities {
            models: [("echo".to_string(), echo), ("add".to_string(), add)].into(),
            ..Default::default()
        };
        assert_eq!(caps.identities(DataType::Int64).len(), 1);
        assert!(caps.identities(DataType::Fp32).is_empty());
        assert!(caps.serves("add") && !caps.serves("multi_output"));
    }
}

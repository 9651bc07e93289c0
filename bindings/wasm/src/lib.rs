#![doc = include_str!("../README.md")]
//!
//! The `#[wasm_bindgen]` surface: [`Preview`] holds one loaded pipeline and answers the
//! page's questions about it. Conversions live in [`convert`] and the graph layout in
//! [`layout`]; both are plain Rust so they are tested natively as well.

pub mod convert;
pub mod layout;

use podci_model::eval::{Evaluation, PipelineContext};
use podci_model::{LoadOptions, Pipeline};
use wasm_bindgen::prelude::*;

/// The version of podci this module was built from.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// One loaded pipeline: the YAML, the included files, and the context rules are evaluated
/// for. Loading validates it; every other method reads the loaded state.
#[wasm_bindgen]
pub struct Preview {
    pipeline: Pipeline,
    ctx: PipelineContext,
    eval: Evaluation,
}

/// Turns a JSON value built by [`convert`] into a JS value.
fn to_js(v: &serde_json::Value) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(v).map_err(|e| JsError::new(&format!("cannot encode result: {e}")))?;
    js_sys::JSON::parse(&text).map_err(|_| JsError::new("cannot decode result"))
}

/// Reads a JS value (object, array, `null` or `undefined`) as JSON text.
fn from_js(v: &JsValue) -> Result<String, JsError> {
    if v.is_undefined() || v.is_null() {
        return Ok(String::new());
    }
    let s = js_sys::JSON::stringify(v).map_err(|_| JsError::new("argument is not JSON-serialisable"))?;
    Ok(String::from(s))
}

#[wasm_bindgen]
impl Preview {
    /// Loads and validates `yaml` (named `.gitlab-ci.yml`). `files` maps paths to the text
    /// of files that `include:local` may read (`{}` or `undefined` for none).
    #[wasm_bindgen(constructor)]
    pub fn new(yaml: &str, files: JsValue) -> Result<Preview, JsError> {
        let source = convert::files_from_json(&from_js(&files)?).map_err(|e| JsError::new(&e.0))?;
        Ok(Self::load(yaml, &source))
    }

    fn load(yaml: &str, source: &podci_model::MemorySource) -> Preview {
        let pipeline = podci_model::load(".gitlab-ci.yml", yaml, source, &LoadOptions::default());
        let ctx = PipelineContext::default();
        let eval = pipeline.evaluate(&ctx);
        Preview { pipeline, ctx, eval }
    }

    /// Whether GitLab would accept the configuration.
    pub fn valid(&self) -> bool {
        self.pipeline.is_valid()
    }

    /// Errors and warnings: `[{severity, message, file, line, column}]`.
    pub fn diagnostics(&self) -> Result<JsValue, JsError> {
        to_js(&convert::diagnostics_json(&self.pipeline))
    }

    /// The stages, `.pre` and `.post` included.
    pub fn stages(&self) -> Vec<String> {
        self.pipeline.stages.clone()
    }

    /// Files read through `include:`.
    pub fn included(&self) -> Vec<String> {
        self.pipeline.included.clone()
    }

    /// Configured jobs: `[{name, stage, when, allow_failure, trigger, needs, instances,
    /// file, line}]`.
    pub fn jobs(&self) -> Result<JsValue, JsError> {
        to_js(&convert::jobs_json(&self.pipeline))
    }

    /// Re-evaluates rules for a context `{ref, tag, source, default_branch, protected,
    /// variables: [{key, value}], changed_files, existing_files, mr_source, mr_target,
    /// commit_message}` (every field optional).
    pub fn set_context(&mut self, context: JsValue) -> Result<(), JsError> {
        let ctx = convert::context_from_json(&from_js(&context)?).map_err(|e| JsError::new(&e.0))?;
        self.eval = self.pipeline.evaluate(&ctx);
        self.ctx = ctx;
        Ok(())
    }

    /// The evaluation for the current context: `{created, name, jobs, decisions, errors}`.
    pub fn evaluation(&self) -> Result<JsValue, JsError> {
        to_js(&convert::evaluation_json(&self.pipeline, &self.eval))
    }

    /// The graph for `mode` (`"stages"` or `"needs"`): `{mode, columns: [{title, cards:
    /// [{name, stage, instances, needs, line}]}], links: [{from, to}]}`.
    pub fn layout(&self, mode: &str) -> Result<JsValue, JsError> {
        let m = layout::Mode::parse(mode).ok_or_else(|| {
            JsError::new(&format!(
                "unknown layout mode {mode:?}: use \"stages\" or \"needs\""
            ))
        })?;
        let l = layout::layout(&self.pipeline, m);
        let v = serde_json::to_value(&l).map_err(|e| JsError::new(&format!("cannot encode layout: {e}")))?;
        to_js(&v)
    }

    /// The merged configuration of one job as YAML, or `undefined` for an unknown job.
    pub fn job_yaml(&self, job: &str) -> Option<String> {
        convert::job_yaml(&self.pipeline, job)
    }

    /// The runner payload of one job instance for the current context, or `null` when the
    /// instance does not run in it.
    pub fn payload(&self, instance: &str) -> Result<JsValue, JsError> {
        match convert::payload_json(&self.pipeline, &self.eval, &self.ctx, instance) {
            Some(v) => to_js(&v),
            None => Ok(JsValue::NULL),
        }
    }

    /// The full configuration as YAML (includes inlined, extends merged, `!reference`
    /// replaced).
    pub fn merged_yaml(&self) -> String {
        convert::merged_yaml(&self.pipeline)
    }
}

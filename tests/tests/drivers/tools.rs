//! The tools device: results, tool errors and unknown tools as `{error}` values, a tool call
//! charged for each, the tool list, and the tool-call quota.

use crate::common::run_process;
use crate::util::det;
use agentos_abi::device::*;
use agentos_abi::*;
use agentos_drivers::json::to_json_text;
use agentos_drivers::tools::{ToolDriver, ToolError, ToolRegistry};
use std::sync::Arc;

fn registry() -> ToolRegistry {
    let mut r = ToolRegistry::new();
    r.register(
        "add",
        "add a and b",
        r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#,
        |args: Value| async move {
            let get = |k| {
                args.get(k)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ToolError::new(format!("missing {k}")))
            };
            Ok(Value::U64(get("a")? + get("b")?))
        },
    )
    .unwrap()
    .register_sync("fail", "always fails", "{}", |_| Err(ToolError::new("disk on fire")))
    .unwrap()
    .register_sync("panics", "panics", "{}", |_| -> Result<Value, ToolError> {
        panic!("tool bug")
    })
    .unwrap();
    r
}

fn call(name: &str, args: Value) -> Value {
    ToolsRequest::Call(ToolCallRequest {
        name: name.into(),
        args,
    })
    .to_value()
}

#[test]
fn tool_results_errors_and_unknown_tools_are_values_and_each_costs_a_call() {
    let k = det(1);
    k.register_driver(Arc::new(ToolDriver::new(registry()).unwrap()))
        .unwrap();
    let seed_spelling = Value::Map(vec![
        ("tool".into(), "add".into()),
        (
            "input".into(),
            Value::Map(vec![
                ("a".into(), Value::U64(1)),
                ("b".into(), Value::U64(1)),
            ]),
        ),
    ]);
    let (exit, seen) = run_process(&k, &["tools"], Quota::default(), move |sys, h| {
        let seed_spelling = seed_spelling.clone();
        async move {
            let list = sys.read(h[0], ToolsRequest::List.to_value()).await;
            let after_list = sys.usage().tool_calls;
            // Arguments exactly as an LLM tool call carries them: a JSON text.
            let json_args = Value::Str(r#"{"a": 2, "b": 40}"#.into());
            let out = sys
                .read_all(
                    h[0],
                    vec![
                        call("add", json_args),
                        seed_spelling,
                        call("add", Value::Map(vec![("a".into(), Value::U64(1))])),
                        call("fail", Value::Unit),
                        call("nope", Value::Unit),
                        call("panics", Value::Unit),
                    ],
                )
                .await;
            let mut v = vec![list, Ok(Value::U64(after_list))];
            match out {
                Ok(items) => v.extend(items.into_iter().map(Ok)),
                Err(e) => v.push(Err(e)),
            }
            v
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let r = &seen.results;
    let Ok(Value::List(specs)) = &r[0] else {
        panic!("tool list: {:?}", r[0]);
    };
    let names: Vec<_> = specs
        .iter()
        .map(|s| ToolSpec::from_value(s.clone()).unwrap().name)
        .collect();
    assert_eq!(names, ["add", "fail", "panics"]);
    assert_eq!(r[1], Ok(Value::U64(0)), "listing is free");
    let outcome = |i: usize| CallOutcome::from_value(r[i].clone().unwrap()).unwrap();
    assert_eq!(outcome(2), CallOutcome::Ok(Value::U64(42)));
    assert_eq!(outcome(3), CallOutcome::Ok(Value::U64(2)));
    assert_eq!(outcome(4), CallOutcome::Err("missing b".into()));
    assert_eq!(outcome(5), CallOutcome::Err("disk on fire".into()));
    assert_eq!(outcome(6), CallOutcome::Err("no such tool: nope".into()));
    assert!(
        matches!(outcome(7), CallOutcome::Err(m) if m.contains("panicked") && m.contains("tool bug"))
    );
    assert_eq!(seen.usage.tool_calls, 6);
}

#[test]
fn specs_feed_an_llm_request_and_the_tool_call_quota_is_enforced() {
    let specs = registry().specs();
    assert!(specs[0].parameters.contains("required"));
    let req = ChatRequest {
        tools: specs,
        ..ChatRequest::new(vec![ChatMessage::user("hi")])
    };
    assert_eq!(ChatRequest::from_value(req.to_value()).unwrap(), req);

    let k = det(1);
    k.register_driver(Arc::new(ToolDriver::new(registry()).unwrap()))
        .unwrap();
    let quota = Quota {
        tool_calls: Some(2),
        ..Quota::default()
    };
    let args = Value::Str(to_json_text(&Value::Map(vec![
        ("a".into(), Value::U64(1)),
        ("b".into(), Value::U64(2)),
    ])));
    let (exit, seen) = run_process(&k, &["tools"], quota, move |sys, h| {
        let args = args.clone();
        async move {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(sys.read(h[0], call("add", args.clone())).await);
            }
            v
        }
    });
    assert_eq!(
        exit,
        ExitReason::Quota {
            resource: Meter::ToolCalls
        }
    );
    assert!(seen.is_none());
}

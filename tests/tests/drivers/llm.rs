//! The LLM device: OpenAI-compatible and Anthropic providers against a real HTTP server on
//! loopback (plain and streamed), retries, costs charged to the caller's account, and a token
//! quota running out in the middle of a call.

use crate::common::run_process;
use crate::server::{Canned, Server};
use crate::util::det;
use agentos_abi::device::*;
use agentos_abi::*;
use agentos_drivers::llm::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn openai(server: &Server) -> OpenAiProvider {
    let mut cfg = OpenAiConfig::new(server.base_url(), "gpt-4o-mini");
    cfg.api_key = Some("sk-test".into());
    cfg.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    OpenAiProvider::new(cfg).unwrap()
}

fn add_tool() -> ToolSpec {
    ToolSpec {
        name: "add".into(),
        description: "add two numbers".into(),
        parameters:
            r#"{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}}}"#.into(),
    }
}

fn ask(stream: bool) -> ChatRequest {
    ChatRequest {
        tools: vec![add_tool()],
        stream,
        max_tokens: Some(128),
        ..ChatRequest::new(vec![
            ChatMessage::system("You add."),
            ChatMessage::user("What is 2+3?"),
            ChatMessage::assistant_calls(
                "",
                vec![ToolCall {
                    id: "call_a".into(),
                    name: "add".into(),
                    arguments: r#"{"a":2,"b":3}"#.into(),
                }],
            ),
            ChatMessage::tool("call_a", "add", "5"),
        ])
    }
}

/// One process reads `req` from the `llm` device; returns the exit, its results and usage.
fn one_read(
    provider: Arc<dyn Provider>,
    req: ChatRequest,
    quota: Quota,
) -> (ExitReason, Option<crate::common::Seen>) {
    let k = det(1);
    k.register_driver(Arc::new(LlmDriver::new(provider).unwrap()))
        .unwrap();
    let v = req.to_value();
    run_process(&k, &["llm"], quota, move |sys, h| {
        let v = v.clone();
        async move { vec![sys.read(h[0], v).await] }
    })
}

fn reply_of(seen: &crate::common::Seen) -> ChatReply {
    let v = seen.results[0].clone().expect("llm read succeeded");
    ChatReply::from_value(v).expect("a chat reply")
}

#[test]
fn openai_chat_with_tools_is_charged_reported_usage_and_price() {
    let server = Server::start(vec![Canned::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_b", "type": "function",
                    "function": {"name": "add", "arguments": "{\"a\":5,\"b\":1}"}}]}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                "prompt_tokens_details": {"cached_tokens": 400}}
        }),
    )]);
    let (exit, seen) = one_read(Arc::new(openai(&server)), ask(false), Quota::default());
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let reply = reply_of(&seen);
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.tool_calls[0].name, "add");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"a":5,"b":1}"#);
    assert_eq!(
        reply.usage,
        Some(TokenUsage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            cached_tokens: 400
        })
    );
    // 600 × 0.15 + 400 × 0.075 + 100 × 0.60 µ$ (gpt-4o-mini list prices).
    assert_eq!(seen.usage.tokens, 1100);
    assert_eq!(seen.usage.usd_micros, 180);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    let b = &r.body;
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["max_tokens"], 128);
    let roles: Vec<_> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["name"], "add");
    assert_eq!(b["messages"][3]["tool_call_id"], "call_a");
    assert_eq!(b["tools"][0]["type"], "function");
    assert_eq!(b["tools"][0]["function"]["parameters"]["type"], "object");
    assert!(b.get("stream").is_none());
}

fn sse(data: serde_json::Value) -> String {
    format!("data: {data}\n\n")
}

#[test]
fn openai_streaming_assembles_content_and_tool_call_deltas() {
    let events = vec![
        sse(
            json!({"model":"local","choices":[{"index":0,"delta":{"role":"assistant","content":"Calling "}}]}),
        ),
        sse(json!({"choices":[{"index":0,"delta":{"content":"add."}}]})),
        sse(
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_s","type":"function","function":{"name":"add","arguments":""}}]}}]}),
        ),
        sse(
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\": 1,"}}]}}]}),
        ),
        sse(
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"b\": 2}"}}]}}]}),
        ),
        sse(json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
        sse(
            json!({"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":32}}}),
        ),
        "data: [DONE]\n\n".to_owned(),
    ];
    let server = Server::start(vec![Canned::sse(events)]);
    let mut cfg = OpenAiConfig::new(format!("{}/v1", server.base_url()), "local");
    cfg.supports_grammar = true;
    let provider = OpenAiProvider::new(cfg).unwrap();
    let mut req = ask(true);
    req.grammar = Some("root ::= \"yes\" | \"no\"".into());
    let (exit, seen) = one_read(Arc::new(provider), req, Quota::default());
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let reply = reply_of(&seen);
    assert_eq!(reply.content, "Calling add.");
    assert_eq!(reply.model, "local");
    assert_eq!(
        reply.tool_calls,
        vec![ToolCall {
            id: "call_s".into(),
            name: "add".into(),
            arguments: r#"{"a": 1, "b": 2}"#.into()
        }]
    );
    assert_eq!(reply.usage.unwrap().cached_tokens, 32);
    assert_eq!(seen.usage.tokens, 49);
    assert_eq!(
        seen.usage.usd_micros, 0,
        "an unpriced local model costs no dollars"
    );
    let body = &server.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["grammar"], "root ::= \"yes\" | \"no\"");
    assert!(server.requests()[0].header("authorization").is_none());
}

#[test]
fn a_small_models_bare_json_tool_call_is_recovered() {
    let server = Server::start(vec![Canned::json(
        200,
        json!({"model":"tiny","choices":[{"index":0,"finish_reason":"stop","message":{
            "role":"assistant",
            "content":"```json\n{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 2}}\n```"}}],
            "usage":{"prompt_tokens":10,"completion_tokens":5}}),
    )]);
    let reply = tokio_block_on(async move {
        let p = openai(&server);
        p.chat(&ask(false)).await
    })
    .unwrap();
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.tool_calls[0].name, "add");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"a":2,"b":2}"#);
    assert_eq!(reply.content, "");
}

fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_429_with_retry_after_is_retried_then_succeeds() {
    let server = Server::start(vec![
        Canned::json(429, json!({"error": {"message": "slow down"}}))
            .with_header("retry-after", "0"),
        Canned::json(503, json!({"error": {"message": "busy"}})).with_header("retry-after-ms", "1"),
        Canned::json(
            200,
            json!({"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"done"}}],
                   "usage":{"prompt_tokens":3,"completion_tokens":1}}),
        ),
    ]);
    let mut cfg = OpenAiConfig::new(server.base_url(), "m");
    // Backoff alone would wait a minute: finishing at all within the timeout below shows the
    // server's Retry-After was honoured.
    cfg.retry = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
    };
    let p = OpenAiProvider::new(cfg).unwrap();
    let out = tokio_block_on(async move {
        tokio::time::timeout(
            Duration::from_secs(20),
            p.chat(&ChatRequest::new(vec![ChatMessage::user("hi")])),
        )
        .await
    })
    .expect("retry-after honoured, not the 60 s backoff");
    assert_eq!(out.unwrap().content, "done");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_client_error_is_not_retried_and_reaches_the_process_as_a_driver_error() {
    let server = Server::start(vec![Canned::json(
        400,
        json!({"error": {"message": "bad model"}}),
    )]);
    let (exit, seen) = one_read(Arc::new(openai(&server)), ask(false), Quota::default());
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    match &seen.results[0] {
        Err(SysError::Driver(m)) => assert!(m.contains("400") && m.contains("bad model"), "{m}"),
        other => panic!("expected a driver error, got {other:?}"),
    }
    assert_eq!(seen.usage.tokens, 0);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_malformed_request_is_a_bad_request_not_a_crash() {
    let k = det(1);
    let p = Arc::new(ScriptedProvider::new([]));
    k.register_driver(Arc::new(LlmDriver::new(p.clone()).unwrap()))
        .unwrap();
    let (exit, seen) = run_process(&k, &["llm"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], Value::Str("hello".into())).await,
            sys.read(h[0], Value::Map(vec![("messages".into(), Value::U64(1))]))
                .await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    for r in seen.unwrap().results {
        assert!(matches!(r, Err(SysError::Driver(m)) if m.contains("bad request")));
    }
    assert!(p.requests().is_empty());
}

#[test]
fn anthropic_messages_with_tool_use_and_cache_usage() {
    let server = Server::start(vec![Canned::json(
        200,
        json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",
            "content":[{"type":"text","text":"Let me add."},
                       {"type":"tool_use","id":"toolu_1","name":"add","input":{"a":1,"b":2}}],
            "stop_reason":"tool_use",
            "usage":{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":1000,
                     "cache_creation_input_tokens":0}}),
    )]);
    let mut cfg = AnthropicConfig::new(server.base_url(), "claude-sonnet-4-20250514");
    cfg.api_key = Some("ak".into());
    let (exit, seen) = one_read(
        Arc::new(AnthropicProvider::new(cfg).unwrap()),
        ask(false),
        Quota::default(),
    );
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let reply = reply_of(&seen);
    assert_eq!(reply.content, "Let me add.");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.tool_calls[0].id, "toolu_1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply.tool_calls[0].arguments).unwrap(),
        json!({"a":1,"b":2})
    );
    assert_eq!(
        reply.usage,
        Some(TokenUsage {
            prompt_tokens: 1100,
            completion_tokens: 50,
            cached_tokens: 1000
        })
    );
    assert_eq!(seen.usage.tokens, 1150);
    // 100 × 3 + 1000 × 0.30 + 50 × 15 µ$ (claude-sonnet-4 list prices).
    assert_eq!(seen.usage.usd_micros, 1350);
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some("ak"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    let b = &r.body;
    assert_eq!(b["system"], "You add.");
    assert_eq!(b["max_tokens"], 128);
    assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(b["messages"][1]["content"][0]["input"]["b"], 3);
    assert_eq!(b["messages"][2]["role"], "user");
    assert_eq!(b["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "call_a");
    assert_eq!(b["tools"][0]["input_schema"]["type"], "object");
}

#[test]
fn anthropic_streaming_assembles_text_and_tool_input() {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let events = vec![
        ev(
            "message_start",
            json!({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[],"usage":{"input_tokens":20,"output_tokens":1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ev("ping", json!({"type":"ping"})),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Sum"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ming."}}),
        ),
        ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_s","name":"add","input":{}}}),
        ),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"4}"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":1}),
        ),
        ev(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}),
        ),
        ev("message_stop", json!({"type":"message_stop"})),
    ];
    let server = Server::start(vec![Canned::sse(events)]);
    let cfg = AnthropicConfig::new(server.base_url(), "claude-3-5-haiku-latest");
    let (exit, seen) = one_read(
        Arc::new(AnthropicProvider::new(cfg).unwrap()),
        ask(true),
        Quota::default(),
    );
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let reply = reply_of(&seen);
    assert_eq!(reply.content, "Summing.");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"a":4}"#);
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(seen.usage.tokens, 32);
    assert_eq!(server.requests()[0].body["stream"], true);
}

#[test]
fn scripted_replies_are_charged_and_requests_recorded() {
    let p = Arc::new(ScriptedProvider::new([
        ChatReply {
            content: "one".into(),
            usage: Some(TokenUsage {
                prompt_tokens: 7,
                completion_tokens: 3,
                cached_tokens: 0,
            }),
            ..ChatReply::default()
        },
        // No usage reported: the driver estimates (prompt text + completion text).
        ChatReply::text("abcdefgh"),
    ]));
    let k = det(1);
    k.register_driver(Arc::new(LlmDriver::new(p.clone()).unwrap()))
        .unwrap();
    let req = ChatRequest::new(vec![ChatMessage::user("abcd")]).to_value();
    let (exit, seen) = run_process(&k, &["llm"], Quota::default(), move |sys, h| {
        let req = req.clone();
        async move {
            let a = sys.read(h[0], req.clone()).await;
            let after_first = sys.usage().tokens;
            let b = sys.read(h[0], req.clone()).await;
            let c = sys.read(h[0], req).await; // the script is exhausted
            vec![a, Ok(Value::U64(after_first)), b, c]
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    assert_eq!(seen.results[1], Ok(Value::U64(10)));
    // Estimate: 4 per message + 1 for "abcd"; 2 for "abcdefgh".
    assert_eq!(seen.usage.tokens, 10 + 5 + 2);
    assert!(matches!(&seen.results[3], Err(SysError::Driver(m)) if m.contains("scripted")));
    assert_eq!(p.requests().len(), 3);
}

#[test]
fn a_reply_bigger_than_the_token_quota_ends_the_process_with_a_quota_exit() {
    let p = Arc::new(ScriptedProvider::with(|_| {
        Ok(ChatReply {
            content: "a long answer".into(),
            usage: Some(TokenUsage {
                prompt_tokens: 80,
                completion_tokens: 40,
                cached_tokens: 0,
            }),
            ..ChatReply::default()
        })
    }));
    let quota = Quota {
        tokens: Some(100),
        ..Quota::default()
    };
    let req = ChatRequest::new(vec![ChatMessage::user("hi")]).to_value();
    let (exit, seen) = one_read_value(p.clone(), req, quota);
    assert_eq!(
        exit,
        ExitReason::Quota {
            resource: Meter::Tokens
        }
    );
    assert!(seen.is_none(), "the process never saw the reply");
    assert_eq!(p.requests().len(), 1, "the call itself was made");
}

fn one_read_value(
    provider: Arc<dyn Provider>,
    v: Value,
    quota: Quota,
) -> (ExitReason, Option<crate::common::Seen>) {
    let k = det(1);
    k.register_driver(Arc::new(LlmDriver::new(provider).unwrap()))
        .unwrap();
    run_process(&k, &["llm"], quota, move |sys, h| {
        let v = v.clone();
        async move { vec![sys.read(h[0], v).await] }
    })
}

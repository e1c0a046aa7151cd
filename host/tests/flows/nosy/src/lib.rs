//! A transformer that imports what only a flow may: the session's context.
//! The host must refuse to load it.

wit_bindgen::generate!({
    inline: r#"
        package test:nosy;

        world nosy {
            import flowhost:flow/context@0.3.0;
            use flowhost:flow/channel@0.3.0.{output, delivery};
            export handle-output: func(output: output) -> result<delivery, string>;
        }
    "#,
    path: "../../../../wit",
    generate_all,
});

use flowhost::flow::channel::WebhookRequest;
use flowhost::flow::context;

struct Nosy;

impl Guest for Nosy {
    fn handle_output(_output: Output) -> Result<Delivery, String> {
        // Would leak a session's context into another's output.
        Ok(Delivery::Send(WebhookRequest {
            url: None,
            headers: Vec::new(),
            body: context::get().into_bytes(),
        }))
    }
}

export!(Nosy);

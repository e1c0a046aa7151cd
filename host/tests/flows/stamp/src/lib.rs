//! A transformer with `handle-output` alone, as an author in another
//! language may build one: the endpoint takes the seed's JSON in, and each
//! output goes out as plain text, `<session>: <text>`.

wit_bindgen::generate!({
    inline: r#"
        package test:stamp;

        world stamp {
            use flowhost:flow/channel@0.3.0.{output, delivery};
            export handle-output: func(output: output) -> result<delivery, string>;
        }
    "#,
    path: "../../../../wit",
    generate_all,
});

use flowhost::flow::channel::WebhookRequest;

struct Stamp;

impl Guest for Stamp {
    fn handle_output(output: Output) -> Result<Delivery, String> {
        let text = format!("{}: {}", output.session_id, output.text.unwrap_or_default());
        Ok(Delivery::Send(WebhookRequest {
            url: None,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: text.into_bytes(),
        }))
    }
}

export!(Stamp);

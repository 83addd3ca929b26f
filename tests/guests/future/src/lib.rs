//! A policy built against a future contract version (9.0.0), which this
//! host must refuse at load with a clear message.

wit_bindgen::generate!({
    inline: "
        package switchboard:plugin@9.0.0;
        interface router {
            validate-config: func(config: string) -> result<_, string>;
        }
        world policy { export router; }
    ",
    world: "policy",
});

struct Future;

impl exports::switchboard::plugin::router::Guest for Future {
    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);

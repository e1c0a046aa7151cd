// Stands in for wit-bindgen's `flow_component_type.o`, which `flow.c`
// links in by this symbol: `flowhost componentize --wit wit` gives the
// component its type from the WIT instead.
void __component_type_object_force_link_flow(void) {}

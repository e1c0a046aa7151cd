;; A flow whose module asks for a table of a million elements at
;; instantiation: the host must refuse it without reserving the memory.
;; Hand-written, because Rust gives no way to declare a table this size.
(component
  (core module $m
    (table 1000000 funcref)
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      unreachable)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      unreachable))
  (core instance $i (instantiate $m))
  (type $message' (record
    (field "user-id" string)
    (field "session-id" string)
    (field "text" (option string))
    (field "data" (option string))
    (field "trace-id" string)
    (field "endpoint" string)))
  (export $message "message" (type $message'))
  (func (export "handle") (param "message" $message) (result (result (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))

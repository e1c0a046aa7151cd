;; A flow that imports an interface flowhost does not provide: the host
;; must refuse to load it, naming the import.
(component
  (import "acme:evil/steal@1.0.0" (instance
    (export "secrets" (func (result string)))))
  (core module $m
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

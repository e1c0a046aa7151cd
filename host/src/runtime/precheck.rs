//! A look at a component's code before it is compiled, to refuse the shapes
//! that make the compiler take minutes and gigabytes.
//!
//! Cranelift's cost is not linear in the size of a file: a function that
//! reads many locals inside deeply nested loops gets a block parameter for
//! about every local at every loop header, so a 19 KB file (4,000 locals,
//! 1,000 loops) compiled for 23 s and a 221 KB one took 3.6 GB in 5 s. One
//! pass over the code section, with no allocation per operator, finds such
//! functions in milliseconds. Real flows are far from the bounds: see
//! [`CodeBounds::default`].
//!
//! This is the first of two guards. The second is that flowhost compiles in
//! a child process with a time and a memory bound (see `flows::compiler`), so
//! a shape this check does not know still cannot hurt the host.

use wasmparser::{Operator, Parser, Payload};

/// How large a function's code may be, in the terms that drive compile
/// cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeBounds {
    /// Locals of one function (its parameters not counted).
    pub max_locals: u32,
    /// Blocks, loops and ifs nested inside one another.
    pub max_nesting: u32,
    /// Locals times the deepest nesting of loops: the number of block
    /// parameters the compiler may have to make.
    pub max_locals_times_loops: u64,
}

impl Default for CodeBounds {
    /// Measured with `cargo xtask code-shape`: a componentize-py flow (18 MB,
    /// 13,363 functions) reaches 271 locals, nesting 781 (LLVM lowers a
    /// `switch` to nested blocks) and a product of locals and loop depth of
    /// 813; a componentize-js flow 118, 456 and 708; the example flows less.
    /// Compile time grows with locals² × loops: a function of 1,000 locals
    /// in 100 loops compiles in 0.3 s here, 4,000 in 125 loops in 8 s. The
    /// product's bound is a hundred times what real code reaches; nesting
    /// alone is cheap (100,000 blocks compile in 0.2 s).
    fn default() -> Self {
        CodeBounds {
            max_locals: 10_000,
            max_nesting: 10_000,
            max_locals_times_loops: 100_000,
        }
    }
}

/// What the deepest function of a component looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeShape {
    /// Functions, over all core modules.
    pub functions: u32,
    /// The most locals of one function.
    pub max_locals: u32,
    /// The deepest nesting of blocks in one function.
    pub max_nesting: u32,
    /// The largest product of locals and loop depth in one function.
    pub max_locals_times_loops: u64,
}

/// Why a component's code was refused before compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefused {
    /// The binary could not be parsed.
    #[error("its code cannot be read: {0}")]
    Malformed(String),
    /// A function is over one of the bounds.
    #[error(
        "function {function} has {what} {value}, over flowhost's bound of {bound}: \
         functions of that shape take the compiler minutes and gigabytes"
    )]
    TooComplex {
        /// The function's index in the code section of its module.
        function: u32,
        /// Which bound.
        what: &'static str,
        /// The function's value.
        value: u64,
        /// The bound.
        bound: u64,
    },
}

/// The shape of the code of every core module in `bytes` (a component or a
/// module), refusing the first function over `bounds`.
pub fn check(bytes: &[u8], bounds: &CodeBounds) -> Result<CodeShape, CodeRefused> {
    let malformed = |e: wasmparser::BinaryReaderError| CodeRefused::Malformed(e.to_string());
    let mut shape = CodeShape::default();
    let mut function = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::CodeSectionStart { .. } => function = 0,
            Payload::CodeSectionEntry(body) => {
                let one = function_shape(&body).map_err(malformed)?;
                let refuse = |what, value: u64, bound: u64| CodeRefused::TooComplex {
                    function,
                    what,
                    value,
                    bound,
                };
                if one.locals > bounds.max_locals {
                    return Err(refuse(
                        "locals",
                        one.locals.into(),
                        bounds.max_locals.into(),
                    ));
                }
                if one.nesting > bounds.max_nesting {
                    return Err(refuse(
                        "blocks nested",
                        one.nesting.into(),
                        bounds.max_nesting.into(),
                    ));
                }
                let product = u64::from(one.locals) * u64::from(one.loops);
                if product > bounds.max_locals_times_loops {
                    return Err(refuse(
                        "locals × nested loops",
                        product,
                        bounds.max_locals_times_loops,
                    ));
                }
                shape.functions += 1;
                shape.max_locals = shape.max_locals.max(one.locals);
                shape.max_nesting = shape.max_nesting.max(one.nesting);
                shape.max_locals_times_loops = shape.max_locals_times_loops.max(product);
                function += 1;
            }
            _ => {}
        }
    }
    Ok(shape)
}

struct FunctionShape {
    locals: u32,
    nesting: u32,
    loops: u32,
}

fn function_shape(body: &wasmparser::FunctionBody<'_>) -> wasmparser::Result<FunctionShape> {
    let mut locals: u32 = 0;
    for entry in body.get_locals_reader()? {
        let (count, _) = entry?;
        locals = locals.saturating_add(count);
    }
    // Which open blocks are loops, as a stack of bits would be: only the
    // depth and the number of open loops matter, and a loop closes only
    // after everything opened inside it.
    let mut open: Vec<bool> = Vec::new();
    let (mut nesting, mut loops, mut open_loops) = (0u32, 0u32, 0u32);
    let mut reader = body.get_operators_reader()?;
    while !reader.eof() {
        match reader.read()? {
            Operator::Block { .. } | Operator::If { .. } | Operator::TryTable { .. } => {
                open.push(false);
            }
            Operator::Loop { .. } => {
                open.push(true);
                open_loops += 1;
                loops = loops.max(open_loops);
            }
            Operator::End => {
                if open.pop() == Some(true) {
                    open_loops -= 1;
                }
            }
            _ => continue,
        }
        nesting = nesting.max(open.len() as u32);
    }
    Ok(FunctionShape {
        locals,
        nesting,
        loops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one function of `locals` locals, read inside
    /// `loops` nested loops: the shape that makes Cranelift slow.
    pub(crate) fn loop_bomb(locals: u32, loops: u32) -> Vec<u8> {
        let mut wat = format!("(module (func (local {})", "i64 ".repeat(locals as usize));
        for _ in 0..loops {
            wat.push_str(" (loop");
        }
        for local in 0..locals {
            wat.push_str(&format!(" (drop (local.get {local}))"));
        }
        for _ in 0..loops {
            wat.push(')');
        }
        wat.push_str("))");
        wat::parse_str(&wat).unwrap()
    }

    #[test]
    fn measures_locals_nesting_and_loops() {
        let wasm = wat::parse_str(
            "(module (func (param i32) (local i32 i64 i64)
                (block (loop (if (local.get 0) (then (loop (br 1))))))))",
        )
        .unwrap();
        let shape = check(&wasm, &CodeBounds::default()).unwrap();
        assert_eq!(shape.functions, 1);
        assert_eq!(shape.max_locals, 3);
        assert_eq!(shape.max_nesting, 4);
        assert_eq!(shape.max_locals_times_loops, 6);
    }

    #[test]
    fn refuses_many_locals_in_deep_loops_at_once() {
        // The 19 KB file of the security review: 4,000 locals in 1,000 loops.
        let bomb = loop_bomb(4_000, 1_000);
        let started = std::time::Instant::now();
        let refused = check(&bomb, &CodeBounds::default()).unwrap_err();
        assert!(
            matches!(
                refused,
                CodeRefused::TooComplex {
                    what: "locals × nested loops",
                    value: 4_000_000,
                    ..
                }
            ),
            "{refused}"
        );
        // Not a timing assertion: a note of what the check costs.
        println!("refused in {:?}", started.elapsed());
    }

    #[test]
    fn refuses_deep_nesting_and_too_many_locals() {
        let deep = wat::parse_str(format!(
            "(module (func {}{}))",
            "(block ".repeat(10_001),
            ")".repeat(10_001)
        ))
        .unwrap();
        assert!(matches!(
            check(&deep, &CodeBounds::default()),
            Err(CodeRefused::TooComplex {
                what: "blocks nested",
                value: 10_001,
                ..
            })
        ));
        let wide = loop_bomb(10_001, 0);
        assert!(matches!(
            check(&wide, &CodeBounds::default()),
            Err(CodeRefused::TooComplex { what: "locals", .. })
        ));
    }

    #[test]
    fn ordinary_code_passes() {
        let wasm = loop_bomb(200, 3);
        assert_eq!(
            check(&wasm, &CodeBounds::default())
                .unwrap()
                .max_locals_times_loops,
            600
        );
    }
}

//! The FHIRPath subset that R4 search-parameter expressions use, evaluated over a
//! resource's JSON with the types of the R4 model.
//!
//! Supported: paths (`Observation.code.coding`, choice elements `Observation.value` reading
//! `valueQuantity`, `valueString`, …), a leading type name (`Patient.`, `Resource.`) or a bare
//! element name (`name | alias`), `|` unions, indexers (`entry[0]`), `is` / `as` (operators
//! and functions), `ofType()`, `where()`, `exists()`, `empty()`, `not()`, `first()`,
//! `resolve()` (only as `resolve() is Type`: a search server does not fetch targets while
//! indexing, so it answers with the type the reference names), `=` / `!=` against literals,
//! `and`, `or`, string, boolean and integer literals, `$this`.
//!
//! Every expression is type-checked against the model when it is compiled: an element
//! that does not exist, a function outside the subset or a type test on a type the path
//! cannot have is an error, so a parameter is either evaluated as written or listed as
//! unsupported — never evaluated half-way.

use serde_json::Value;

use crate::model::{model, DataType, Element, Node, NodeId, Primitive};

/// A compiled expression, with the types its results may have.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    expression: Expr,
    /// The static types of the results, deduplicated.
    pub(crate) result_types: Vec<StaticType>,
}

/// What a value is, for navigation and type tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A complex data type, backbone element or resource (its node in the model).
    Node(NodeId),
    Primitive(Primitive),
    /// A resource of a type known only from its `resourceType` (`contained`, `entry.resource`).
    AnyResource,
    /// A computed boolean (`exists()`, `=`, `and`, `is`).
    Boolean,
    /// A string literal.
    Text,
    /// An integer literal.
    Integer,
    /// The target of `resolve()`: only its type is known.
    Resolved,
}

/// A static type: the kind and the FHIR type name (`Quantity`, `dateTime`, `Patient`, or a
/// backbone path such as `Patient.contact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaticType {
    pub(crate) kind: Kind,
    pub(crate) name: String,
}

/// One value an expression yields.
#[derive(Debug, Clone)]
pub(crate) enum Item<'a> {
    /// A value in the resource, with its type name and the required binding of its element
    /// (an index into the model's value sets), if any.
    Value {
        json: &'a Value,
        kind: Kind,
        type_name: &'a str,
        binding: Option<u16>,
    },
    Boolean(bool),
    Text(String),
    Integer(i64),
    /// `resolve()` of a reference: the type it names, if any.
    Resolved(Option<String>),
}

impl<'a> Item<'a> {
    /// The FHIR type name of the item (`Resolved` without a type has none).
    fn type_name(&self) -> Option<&str> {
        match self {
            Item::Value { type_name, .. } => Some(type_name),
            Item::Boolean(_) => Some("boolean"),
            Item::Text(_) => Some("string"),
            Item::Integer(_) => Some("integer"),
            Item::Resolved(resource_type) => resource_type.as_deref(),
        }
    }
}

/// Compiles `expression` for resources of type `base` (`Resource` for the parameters every
/// resource has: type-checked against `Patient`'s elements, which are those of `Resource`).
pub(crate) fn compile(expression: &str, base: &str) -> Result<Compiled, String> {
    let tokens = lex(expression)?;
    let mut parser = Parser { tokens, position: 0 };
    let expr = parser.expression()?;
    if parser.position != parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.position]));
    }
    let model = model();
    let check_base = if base == "Resource" || base == "DomainResource" { "Patient" } else { base };
    let node = model.resource_node(check_base).ok_or_else(|| format!("{base} is not a resource type"))?;
    let context = vec![StaticType { kind: Kind::Node(node), name: check_base.to_string() }];
    let result_types = check(&expr, &context)?;
    Ok(Compiled { expression: expr, result_types })
}

impl Compiled {
    /// Evaluates on a resource (whose type the caller has matched to the compiled base).
    pub(crate) fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Item<'a>> {
        let Some(context) = resource_item(resource) else {
            return Vec::new();
        };
        evaluate(&self.expression, &[context])
    }
}

// ---------------------------------------------------------------------------------------
// Lexer and parser

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    Text(String),
    Integer(i64),
    Symbol(&'static str),
}

const SYMBOLS: &[&str] = &["!=", ".", "(", ")", "[", "]", "|", "=", ","];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        if first.is_whitespace() {
            rest = &rest[first.len_utf8()..];
        } else if first == '\'' {
            let end = rest[1..].find('\'').ok_or("unterminated string")? + 1;
            let literal = &rest[1..end];
            if literal.contains('\\') {
                return Err("escapes in strings are not supported".into());
            }
            tokens.push(Token::Text(literal.to_string()));
            rest = &rest[end + 1..];
        } else if first.is_ascii_digit() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            tokens.push(Token::Integer(rest[..end].parse().map_err(|_| "integer too large")?));
            rest = &rest[end..];
        } else if first.is_ascii_alphabetic() || first == '_' || first == '$' {
            let end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(rest.len(), |i| i + 1);
            tokens.push(Token::Identifier(rest[..end].to_string()));
            rest = &rest[end..];
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            tokens.push(Token::Symbol(symbol));
            rest = &rest[symbol.len()..];
        } else {
            return Err(format!("unsupported character {first:?}"));
        }
    }
    Ok(tokens)
}

#[derive(Debug, Clone)]
enum Expr {
    /// `$this`, or the input of a function argument.
    This,
    Literal(Literal),
    /// An identifier at the start of a path: the context itself if it names the context's
    /// type, else a child element of the context.
    Identifier(String),
    Member(Box<Expr>, String),
    Call(Box<Expr>, Function),
    Index(Box<Expr>, usize),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
    Union(Box<Expr>, Box<Expr>),
    Equals {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    Boolean(bool),
    Integer(i64),
}

#[derive(Debug, Clone)]
enum Function {
    Where(Box<Expr>),
    /// `ofType(T)` and `as(T)`.
    OfType(String),
    Is(String),
    Exists,
    Empty,
    Not,
    First,
    Resolve,
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(candidate)) if *candidate == symbol) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if matches!(self.peek(), Some(Token::Identifier(word)) if word == keyword) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), String> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(format!("expected `{symbol}`"))
        }
    }

    /// `or` has the lowest precedence of the subset, then `and`, `=`/`!=`, `|`, `is`/`as`,
    /// then `.` and `[]` (the FHIRPath specification's order).
    fn expression(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.equality()?;
        while self.eat_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, String> {
        let left = self.union()?;
        let negated = if self.eat_symbol("=") {
            false
        } else if self.eat_symbol("!=") {
            true
        } else {
            return Ok(left);
        };
        Ok(Expr::Equals { left: Box::new(left), right: Box::new(self.union()?), negated })
    }

    fn union(&mut self) -> Result<Expr, String> {
        let mut left = self.type_expression()?;
        while self.eat_symbol("|") {
            left = Expr::Union(Box::new(left), Box::new(self.type_expression()?));
        }
        Ok(left)
    }

    fn type_expression(&mut self) -> Result<Expr, String> {
        let mut left = self.postfix()?;
        loop {
            if self.eat_keyword("is") {
                left = Expr::Is(Box::new(left), self.type_name()?);
            } else if self.eat_keyword("as") {
                left = Expr::As(Box::new(left), self.type_name()?);
            } else {
                return Ok(left);
            }
        }
    }

    fn type_name(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Identifier(name)) => {
                // `FHIR.Patient` and `System.String` namespaces are not used by R4 search.
                Ok(name)
            }
            other => Err(format!("expected a type name, found {other:?}")),
        }
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut expr = self.term()?;
        loop {
            if self.eat_symbol(".") {
                let name = match self.next() {
                    Some(Token::Identifier(name)) => name,
                    other => return Err(format!("expected a name after `.`, found {other:?}")),
                };
                expr = if self.eat_symbol("(") {
                    Expr::Call(Box::new(expr), self.function(&name)?)
                } else {
                    Expr::Member(Box::new(expr), name)
                };
            } else if self.eat_symbol("[") {
                let index = match self.next() {
                    Some(Token::Integer(index)) => usize::try_from(index).map_err(|_| "index too large")?,
                    other => return Err(format!("expected an index, found {other:?}")),
                };
                self.expect_symbol("]")?;
                expr = Expr::Index(Box::new(expr), index);
            } else {
                return Ok(expr);
            }
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Symbol("(")) => {
                let inner = self.expression()?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            Some(Token::Text(text)) => Ok(Expr::Literal(Literal::Text(text))),
            Some(Token::Integer(integer)) => Ok(Expr::Literal(Literal::Integer(integer))),
            Some(Token::Identifier(name)) => match name.as_str() {
                "true" => Ok(Expr::Literal(Literal::Boolean(true))),
                "false" => Ok(Expr::Literal(Literal::Boolean(false))),
                "$this" => Ok(Expr::This),
                _ if name.starts_with('$') => Err(format!("unsupported variable {name}")),
                _ if self.eat_symbol("(") => Ok(Expr::Call(Box::new(Expr::This), self.function(&name)?)),
                _ => Ok(Expr::Identifier(name)),
            },
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// The function `name`, after its `(`; consumes the `)`.
    fn function(&mut self, name: &str) -> Result<Function, String> {
        let function = match name {
            "where" => Function::Where(Box::new(self.expression()?)),
            "as" | "ofType" => Function::OfType(self.type_name()?),
            "is" => Function::Is(self.type_name()?),
            "exists" => Function::Exists,
            "empty" => Function::Empty,
            "not" => Function::Not,
            "first" => Function::First,
            "resolve" => Function::Resolve,
            _ => return Err(format!("unsupported function {name}()")),
        };
        self.expect_symbol(")")?;
        Ok(function)
    }
}

// ---------------------------------------------------------------------------------------
// Types

/// Whether a value of type `actual` is a `wanted` (FHIR's type hierarchy, for the types
/// search expressions test: quantities, string and uri specializations, resources).
pub(crate) fn is_type(actual: &str, wanted: &str) -> bool {
    if actual == wanted {
        return true;
    }
    match wanted {
        "Quantity" => matches!(actual, "Age" | "Count" | "Distance" | "Duration" | "SimpleQuantity" | "MoneyQuantity"),
        "string" => matches!(actual, "code" | "id" | "markdown"),
        "uri" => matches!(actual, "url" | "canonical" | "oid" | "uuid"),
        "integer" => matches!(actual, "positiveInt" | "unsignedInt"),
        "Resource" => model().resource_node(actual).is_some(),
        "DomainResource" => {
            model().resource_node(actual).is_some() && !matches!(actual, "Bundle" | "Binary" | "Parameters")
        }
        _ => false,
    }
}

fn is_type_name(name: &str) -> bool {
    let model = model();
    model.resource_node(name).is_some()
        || model.is_abstract_resource(name)
        || model.nodes.iter().any(|node| &*node.name == name)
        || crate::model::Primitive::is_name(name)
}

fn element_named<'m>(node: &'m Node, name: &str) -> Option<&'m Element> {
    node.elements.iter().find(|element| &*element.name == name)
}

fn kind_of(data_type: DataType) -> Kind {
    match data_type {
        DataType::Primitive(primitive) => Kind::Primitive(primitive),
        DataType::Complex(node) => Kind::Node(node),
        DataType::Resource => Kind::AnyResource,
    }
}

fn push_type(types: &mut Vec<StaticType>, static_type: StaticType) {
    if !types.contains(&static_type) {
        types.push(static_type);
    }
}

fn boolean_type() -> Vec<StaticType> {
    vec![StaticType { kind: Kind::Boolean, name: "boolean".into() }]
}

/// The static types of `expr` on inputs of types `input`.
fn check(expr: &Expr, input: &[StaticType]) -> Result<Vec<StaticType>, String> {
    Ok(match expr {
        Expr::This => input.to_vec(),
        Expr::Literal(Literal::Text(_)) => vec![StaticType { kind: Kind::Text, name: "string".into() }],
        Expr::Literal(Literal::Boolean(_)) => boolean_type(),
        Expr::Literal(Literal::Integer(_)) => vec![StaticType { kind: Kind::Integer, name: "integer".into() }],
        Expr::Identifier(name) => {
            let names_context = input.iter().all(|static_type| is_type(&static_type.name, name));
            if names_context && !input.is_empty() {
                input.to_vec()
            } else if name.starts_with(|c: char| c.is_ascii_uppercase()) && is_type_name(name) {
                return Err(format!("{name} is not the type of the context"));
            } else {
                member_types(input, name)?
            }
        }
        Expr::Member(inner, name) => member_types(&check(inner, input)?, name)?,
        Expr::Index(inner, _) => check(inner, input)?,
        Expr::Is(inner, _) => {
            check(inner, input)?;
            boolean_type()
        }
        Expr::As(inner, type_name) => of_type(&check(inner, input)?, type_name)?,
        Expr::Union(left, right) => {
            let mut types = check(left, input)?;
            for static_type in check(right, input)? {
                push_type(&mut types, static_type);
            }
            types
        }
        Expr::Equals { left, right, .. } => {
            check(left, input)?;
            check(right, input)?;
            boolean_type()
        }
        Expr::And(left, right) | Expr::Or(left, right) => {
            check(left, input)?;
            check(right, input)?;
            boolean_type()
        }
        Expr::Call(inner, function) => {
            let inner_types = check(inner, input)?;
            match function {
                Function::Where(condition) => {
                    check(condition, &inner_types)?;
                    inner_types
                }
                Function::OfType(type_name) => of_type(&inner_types, type_name)?,
                Function::Is(_) | Function::Exists | Function::Empty | Function::Not => boolean_type(),
                Function::First => inner_types,
                Function::Resolve => {
                    if !inner_types.iter().all(|static_type| static_type.name == "Reference") {
                        return Err("resolve() on something other than a Reference".into());
                    }
                    vec![StaticType { kind: Kind::Resolved, name: "Resource".into() }]
                }
            }
        }
    })
}

fn member_types(input: &[StaticType], name: &str) -> Result<Vec<StaticType>, String> {
    let model = model();
    let mut types = Vec::new();
    let mut found = false;
    for static_type in input {
        let node = match static_type.kind {
            Kind::Node(node) => model.node(node),
            _ => continue,
        };
        if let Some(element) = element_named(node, name) {
            found = true;
            for variant in &element.variants {
                push_type(
                    &mut types,
                    StaticType { kind: kind_of(variant.data_type), name: variant.type_name.to_string() },
                );
            }
        }
    }
    if found {
        Ok(types)
    } else {
        let on: Vec<&str> = input.iter().map(|static_type| static_type.name.as_str()).collect();
        Err(format!("no element `{name}` on {}", on.join(" or ")))
    }
}

fn of_type(input: &[StaticType], type_name: &str) -> Result<Vec<StaticType>, String> {
    let mut types = Vec::new();
    for static_type in input {
        if static_type.kind == Kind::Resolved || is_type(&static_type.name, type_name) {
            push_type(&mut types, static_type.clone());
        } else if static_type.kind == Kind::AnyResource {
            if let Some(node) = model().resource_node(type_name) {
                push_type(&mut types, StaticType { kind: Kind::Node(node), name: type_name.to_string() });
            }
        }
    }
    if types.is_empty() {
        let on: Vec<&str> = input.iter().map(|static_type| static_type.name.as_str()).collect();
        return Err(format!("no value of type {type_name} can come from {}", on.join(" or ")));
    }
    Ok(types)
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// The item of a resource (its node found from `resourceType`).
pub(crate) fn resource_item(resource: &Value) -> Option<Item<'_>> {
    let resource_type = resource.get("resourceType")?.as_str()?;
    let node = model().resource_node(resource_type)?;
    Some(Item::Value { json: resource, kind: Kind::Node(node), type_name: resource_type, binding: None })
}

fn evaluate<'a>(expr: &Expr, input: &[Item<'a>]) -> Vec<Item<'a>> {
    match expr {
        Expr::This => input.to_vec(),
        Expr::Literal(Literal::Text(text)) => vec![Item::Text(text.clone())],
        Expr::Literal(Literal::Boolean(value)) => vec![Item::Boolean(*value)],
        Expr::Literal(Literal::Integer(value)) => vec![Item::Integer(*value)],
        Expr::Identifier(name) => {
            let names_context = !input.is_empty()
                && input.iter().all(|item| item.type_name().is_some_and(|actual| is_type(actual, name)));
            if names_context {
                input.to_vec()
            } else {
                members(input, name)
            }
        }
        Expr::Member(inner, name) => members(&evaluate(inner, input), name),
        Expr::Index(inner, index) => evaluate(inner, input).into_iter().nth(*index).into_iter().collect(),
        Expr::Is(inner, type_name) => is_test(&evaluate(inner, input), type_name),
        Expr::As(inner, type_name) => keep_type(evaluate(inner, input), type_name),
        Expr::Union(left, right) => {
            let mut items = evaluate(left, input);
            items.extend(evaluate(right, input));
            items
        }
        Expr::Equals { left, right, negated } => {
            let left = evaluate(left, input);
            let right = evaluate(right, input);
            match equals(&left, &right) {
                Some(equal) => vec![Item::Boolean(equal != *negated)],
                None => Vec::new(),
            }
        }
        Expr::And(left, right) => {
            let left = truth(&evaluate(left, input));
            let right = truth(&evaluate(right, input));
            match (left, right) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Boolean(false)],
                (Some(true), Some(true)) => vec![Item::Boolean(true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(left, right) => {
            let left = truth(&evaluate(left, input));
            let right = truth(&evaluate(right, input));
            match (left, right) {
                (Some(true), _) | (_, Some(true)) => vec![Item::Boolean(true)],
                (Some(false), Some(false)) => vec![Item::Boolean(false)],
                _ => Vec::new(),
            }
        }
        Expr::Call(inner, function) => {
            let items = evaluate(inner, input);
            match function {
                Function::Where(condition) => items
                    .into_iter()
                    .filter(|item| truth(&evaluate(condition, std::slice::from_ref(item))) == Some(true))
                    .collect(),
                Function::OfType(type_name) => keep_type(items, type_name),
                Function::Is(type_name) => is_test(&items, type_name),
                Function::Exists => vec![Item::Boolean(!items.is_empty())],
                Function::Empty => vec![Item::Boolean(items.is_empty())],
                Function::Not => match truth(&items) {
                    Some(value) => vec![Item::Boolean(!value)],
                    None => Vec::new(),
                },
                Function::First => items.into_iter().take(1).collect(),
                Function::Resolve => items.iter().map(|item| Item::Resolved(reference_target_type(item))).collect(),
            }
        }
    }
}

/// The children named `name` (an element name; a choice element's present variant) of each item.
fn members<'a>(input: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let model = model();
    let mut output = Vec::new();
    for item in input {
        let Item::Value { json, kind, .. } = item else {
            continue;
        };
        let node = match kind {
            Kind::Node(node) => model.node(*node),
            Kind::AnyResource => match resource_item(json) {
                Some(Item::Value { kind: Kind::Node(node), .. }) => model.node(node),
                _ => continue,
            },
            _ => continue,
        };
        let Some(element) = element_named(node, name) else {
            continue;
        };
        for variant in &element.variants {
            let Some(value) = json.get(&*variant.json_name) else {
                continue;
            };
            let values: &[Value] = match value {
                Value::Array(values) => values,
                single => std::slice::from_ref(single),
            };
            for value in values.iter().filter(|value| !value.is_null()) {
                let (kind, type_name) = match variant.data_type {
                    DataType::Resource => match resource_item(value) {
                        Some(Item::Value { kind, type_name, .. }) => (kind, type_name),
                        _ => continue,
                    },
                    data_type => (kind_of(data_type), &*variant.type_name),
                };
                output.push(Item::Value { json: value, kind, type_name, binding: element.binding });
            }
        }
    }
    output
}

fn keep_type<'a>(items: Vec<Item<'a>>, type_name: &str) -> Vec<Item<'a>> {
    items.into_iter().filter(|item| item.type_name().is_some_and(|actual| is_type(actual, type_name))).collect()
}

/// `is T` on a singleton; empty on anything else (FHIRPath).
fn is_test(items: &[Item<'_>], type_name: &str) -> Vec<Item<'static>> {
    match items {
        [item] => vec![Item::Boolean(item.type_name().is_some_and(|actual| is_type(actual, type_name)))],
        _ => Vec::new(),
    }
}

/// The truth of a collection used as a condition: empty is unknown, a single boolean is
/// itself, any other single value is true (FHIRPath's singleton evaluation).
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [Item::Boolean(value)] => Some(*value),
        [Item::Value { json: Value::Bool(value), .. }] => Some(*value),
        [_] => Some(true),
        _ => None,
    }
}

/// `=` on two singletons of primitive values; `None` (empty) if either side is not one.
fn equals(left: &[Item<'_>], right: &[Item<'_>]) -> Option<bool> {
    let (left, right) = match (left, right) {
        ([left], [right]) => (primitive_of(left)?, primitive_of(right)?),
        _ => return None,
    };
    Some(left == right)
}

#[derive(PartialEq)]
enum Primitive2 {
    Text(String),
    Boolean(bool),
    Number(String),
}

fn primitive_of(item: &Item<'_>) -> Option<Primitive2> {
    Some(match item {
        Item::Boolean(value) => Primitive2::Boolean(*value),
        Item::Text(text) => Primitive2::Text(text.clone()),
        Item::Integer(value) => Primitive2::Number(value.to_string()),
        Item::Value { json: Value::String(text), .. } => Primitive2::Text(text.clone()),
        Item::Value { json: Value::Bool(value), .. } => Primitive2::Boolean(*value),
        Item::Value { json: Value::Number(number), .. } => Primitive2::Number(number.to_string()),
        _ => return None,
    })
}

/// The type a Reference item names: from `Reference.reference` (`Type/id`, an absolute URL
/// ending in `Type/id[/_history/v]`), else from `Reference.type`.
pub(crate) fn reference_target_type(item: &Item<'_>) -> Option<String> {
    let Item::Value { json, type_name: "Reference", .. } = item else {
        return None;
    };
    if let Some(reference) = json.get("reference").and_then(Value::as_str) {
        if let Some((resource_type, _)) = reference_type_and_id(reference) {
            return Some(resource_type.to_string());
        }
    }
    let declared = json.get("type").and_then(Value::as_str)?;
    // `Reference.type` is a URI; for FHIR types it is the bare name or the
    // `http://hl7.org/fhir/StructureDefinition/` URL.
    let name = declared.rsplit('/').next().unwrap_or(declared);
    model().resource_node(name).map(|_| name.to_string())
}

/// `(type, id)` of the last `Type/id` of a relative or absolute literal reference
/// (`Patient/1`, `Patient/1/_history/2`, `https://x/fhir/Patient/1`); `None` for a contained
/// reference, a URN, or anything not ending in a resource type and an id.
pub(crate) fn reference_type_and_id(reference: &str) -> Option<(&str, &str)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    let mut segments: Vec<&str> = path.split('/').collect();
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        segments.truncate(segments.len() - 2);
    }
    let (id, resource_type) = match segments.as_slice() {
        [.., resource_type, id] => (*id, *resource_type),
        _ => return None,
    };
    (model().resource_node(resource_type).is_some() && crate::validate::is_valid_id(id)).then_some((resource_type, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(items: &[Item<'_>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Value { json, type_name, .. } => format!("{type_name}:{json}"),
                Item::Boolean(value) => format!("bool:{value}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn run(expression: &str, base: &str, resource: &Value) -> Vec<String> {
        strings(&compile(expression, base).expect("compiles").evaluate(resource))
    }

    #[test]
    fn paths_arrays_and_choice_types() {
        let patient = json!({"resourceType": "Patient", "id": "p1",
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}, {"given": ["Jim"]}],
            "deceasedDateTime": "2015-02-14"});
        assert_eq!(
            run("Patient.name.given", "Patient", &patient),
            ["string:\"Peter\"", "string:\"James\"", "string:\"Jim\""]
        );
        assert_eq!(run("Resource.id", "Resource", &patient), ["id:\"p1\""]);
        assert_eq!(run("(Patient.deceased as dateTime)", "Patient", &patient), ["dateTime:\"2015-02-14\""]);
        assert_eq!(run("Patient.deceased.as(boolean)", "Patient", &patient), Vec::<String>::new());
        assert_eq!(run("Patient.deceased.exists() and Patient.deceased != false", "Patient", &patient), ["bool:true"]);
        let alive = json!({"resourceType": "Patient", "deceasedBoolean": false});
        assert_eq!(run("Patient.deceased.exists() and Patient.deceased != false", "Patient", &alive), ["bool:false"]);
        let unknown = json!({"resourceType": "Patient"});
        assert_eq!(run("Patient.deceased.exists() and Patient.deceased != false", "Patient", &unknown), ["bool:false"]);
    }

    #[test]
    fn where_resolve_is_and_unions() {
        let observation = json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "https://other.example/fhir/Patient/p2/_history/3"}],
            "valueQuantity": {"value": 5.4, "unit": "mmol/L"}});
        assert_eq!(
            run(
                "Observation.subject.where(resolve() is Patient) | Observation.performer.where(resolve() is Patient)",
                "Observation",
                &observation
            ),
            [
                "Reference:{\"reference\":\"Patient/p1\"}",
                "Reference:{\"reference\":\"https://other.example/fhir/Patient/p2/_history/3\"}"
            ]
        );
        assert_eq!(
            run("(Observation.value as Quantity) | (Observation.value as SampledData)", "Observation", &observation),
            ["Quantity:{\"value\":5.4,\"unit\":\"mmol/L\"}"]
        );
        let practitioner = json!({"resourceType": "Practitioner",
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@b"}]});
        assert_eq!(
            run("Practitioner.telecom.where(system='email')", "Practitioner", &practitioner),
            ["ContactPoint:{\"system\":\"email\",\"value\":\"a@b\"}"]
        );
        let plan = json!({"resourceType": "InsurancePlan", "name": "Gold", "alias": ["G", "Au"]});
        assert_eq!(run("name | alias", "InsurancePlan", &plan), ["string:\"Gold\"", "string:\"G\"", "string:\"Au\""]);
    }

    #[test]
    fn indexers_and_contained_resources() {
        let bundle = json!({"resourceType": "Bundle", "type": "document",
            "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}, {"resource": {"resourceType": "Patient"}}]});
        assert_eq!(
            run("Bundle.entry[0].resource", "Bundle", &bundle),
            ["Composition:{\"resourceType\":\"Composition\",\"id\":\"c\"}"]
        );
        assert_eq!(run("Bundle.entry[1].resource.ofType(Patient)", "Bundle", &bundle).len(), 1);
    }

    #[test]
    fn compile_errors_name_the_problem() {
        assert!(compile("Patient.nmae", "Patient").expect_err("an error").contains("no element `nmae`"));
        assert!(compile("Patient.name.select(given)", "Patient")
            .expect_err("an error")
            .contains("unsupported function select()"));
        assert!(compile("(Observation.value as Period)", "Observation").is_ok());
        assert!(compile("(Observation.value as Age)", "Observation")
            .expect_err("an error")
            .contains("no value of type Age"));
        assert!(compile("Observation.code", "Patient").is_err());
        assert!(compile("Patient.name.family.resolve()", "Patient").is_err());
        assert!(compile("Patient.name[", "Patient").is_err());
    }

    #[test]
    fn reference_types_come_from_the_reference_or_its_type() {
        for (reference, expected) in [
            ("Patient/1", Some(("Patient", "1"))),
            ("Patient/1/_history/2", Some(("Patient", "1"))),
            ("https://x.example/fhir/Observation/a.b-c", Some(("Observation", "a.b-c"))),
            ("#contained", None),
            ("urn:uuid:0f8e", None),
            ("Nonsense/1", None),
            ("Patient", None),
        ] {
            assert_eq!(reference_type_and_id(reference), expected, "{reference}");
        }
        let typed = json!({"type": "Patient", "identifier": {"value": "x"}});
        let item = Item::Value { json: &typed, kind: Kind::Text, type_name: "Reference", binding: None };
        assert_eq!(reference_target_type(&item).as_deref(), Some("Patient"));
    }
}

//! Invalid inputs, each with the exact errors it gives: `LINE:COL: PATH: MESSAGE`.

/// Parses and validates `input` as one file and renders its errors without the file name.
fn errors_of(input: &str) -> String {
    match kedge_crds::load_str("t.yaml", input) {
        Ok(_) => String::new(),
        Err(errors) => errors
            .0
            .iter()
            .map(|error| error.to_string().trim_start_matches("t.yaml:").to_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn check(input: &str, expected: &str) {
    let actual = errors_of(input);
    assert_eq!(
        actual,
        expected,
        "input:\n{input}\nactual errors where they point:\n{}",
        carets(input, &actual)
    );
}

/// Each error's line with a caret under its column, to see at a glance what an error points at.
fn carets(input: &str, errors: &str) -> String {
    let lines: Vec<&str> = input.lines().collect();
    let mut out = String::new();
    for error in errors.lines() {
        let mut parts = error.splitn(3, ':');
        let line: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let column: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let text = lines.get(line.wrapping_sub(1)).copied().unwrap_or("<no such line>");
        out.push_str(&format!("{error}\n    {text}\n    {}^\n", " ".repeat(column.saturating_sub(1))));
    }
    out
}

/// A valid document (lines 1 to 6) followed by `spec_lines` indented under `spec:` from line 7.
fn with_spec(spec_lines: &str) -> String {
    let mut text = String::from(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: busybox\n",
    );
    for line in spec_lines.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[test]
fn valid_base_document() {
    check(&with_spec(""), "");
}

#[test]
fn envelope() {
    check(
        "apiVersion: v1\nkind: Container\n",
        "1:13: apiVersion: unsupported apiVersion `v1`, expected `kedge.io/v1`",
    );
    check("apiVersion: kedge.io/v1\nkind: Pod\n", "2:7: kind: unsupported kind `Pod`, expected `Container`");
    check("kind: Container\n", "1:1: apiVersion: missing required field `apiVersion`");
    check("- a\n- b\n", "1:1: a document must be a map with apiVersion, kind, metadata and spec");
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nspec:\n  image: busybox\n",
        "1:1: metadata: missing required field `metadata`",
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: a\n",
        "1:1: spec: missing required field `spec`",
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: a\nspec: {}\n",
        "5:7: spec.image: missing required field `image`",
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadta:\n  name: a\n",
        // The missing `metadata` is the typo's and not reported again; the missing `spec` is a mistake of its own.
        "1:1: spec: missing required field `spec`\n3:1: metadta: unknown field `metadta`, did you mean `metadata`?",
    );
}

#[test]
fn yaml_syntax() {
    check(
        "apiVersion: [\n",
        "2:1: YAML syntax error: while parsing a node, did not find expected node content",
    );
    check("a: 1\na: 2\n", "2:1: a: duplicate key `a`");
    check("a: *nothing\n", "1:4: YAML syntax error: while parsing node, found unknown anchor");
    check("a: b\n  c: d\n", "2:4: YAML syntax error: mapping values are not allowed in this context");
}

#[test]
fn metadata() {
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: Web_1\nspec:\n  image: busybox\n",
        "4:9: metadata.name: `Web_1` is not a valid name: use only lowercase letters, digits and `-`",
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\n  namespace: -x\nspec:\n  image: busybox\n",
        "5:14: metadata.namespace: `-x` is not a valid namespace: it must start and end with a letter or digit",
    );
    check(
        &format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {}\nspec:\n  image: busybox\n",
            "a".repeat(64)
        ),
        &format!(
            "4:9: metadata.name: `{}` is not a valid name: it must be 1 to 63 characters",
            "a".repeat(64)
        ),
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\n  labels:\n    'bad key': x\nspec:\n  image: busybox\n",
        "6:5: metadata.labels.bad key: `bad key` is not a valid label key: `[prefix/]name`, name of letters, digits, `.`, `_`, `-`",
    );
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  nam: web\nspec:\n  image: busybox\n",
        "4:3: metadata.nam: unknown field `nam`, did you mean `name`?",
    );
}

#[test]
fn image_and_command() {
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: Busybox:latest\n",
        "6:10: spec.image: invalid image reference `Busybox:latest`: repository component `Busybox` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`",
    );
    check(
        &with_spec("imagePullPolicy: Always"),
        "7:3: spec.imagePullPolicy: unknown field `imagePullPolicy`",
    );
    check(
        &with_spec("comand: [sleep, 1]"),
        "7:3: spec.comand: unknown field `comand`, did you mean `command`?",
    );
    check(
        &with_spec("command: sleep 1"),
        "7:12: spec.command: invalid type: string \"sleep 1\", expected a list of strings",
    );
    check(&with_spec("env:\n  'A=B': x"), "8:5: spec.env.A=B: `A=B` is not a valid variable name: it must be non-empty, without `=` or whitespace");
    check(&with_spec("env: [NOEQUALS]"), "7:9: spec.env[0]: `NOEQUALS` is not of the form KEY=VALUE");
    check(
        &with_spec("env:\n  - name: DB\n    valueFrom: {secretKeyRef: {name: db, key: pw}}"),
        "8:7: spec.env[0]: `valueFrom` is Kubernetes'; take a value from a kedge secret with \
         `secretEnv: {NAME: {secret: SECRET, key: KEY}}` (docs/secrets.md)",
    );
    check(&with_spec("env:\n  - value: x"), "8:7: spec.env[0]: an env item without `name`");
    check(
        &with_spec("env:\n  - {name: A, vaule: x}"),
        "8:7: spec.env[0]: unknown field `vaule`, did you mean `value`?",
    );
    check(&with_spec("workingDir: app"), "7:15: spec.workingDir: `app` is not an absolute path");
    check(&with_spec("hostname: bad_host"), "7:13: spec.hostname: `bad_host` is not a valid hostname: use letters, digits and `-`, not at the start or end of a part");
    check(
        &with_spec("labels:\n  kedge.io/spec: x"),
        "8:5: spec.labels.kedge.io/spec: labels under `kedge.io/` are reserved for kedge itself",
    );
}

#[test]
fn ports() {
    check(
        &with_spec("ports:\n  - 8080:80\n  - hostPort: 0\n    containerPort: 80"),
        "9:17: spec.ports[1].hostPort: must be a port number from 1 to 65535 (leave it out for any)",
    );
    check(
        &with_spec("ports:\n  - containerPort: 70000"),
        "8:22: spec.ports[0].containerPort: invalid value: integer `70000`, expected u16",
    );
    check(
        &with_spec("ports:\n  - 8080:80/icmp"),
        "8:7: spec.ports[0]: invalid port `8080:80/icmp`: protocol `icmp` is not tcp, udp or sctp",
    );
    check(
        &with_spec("ports:\n  - 1.2.3:8080:80"),
        "8:7: spec.ports[0]: invalid port `1.2.3:8080:80`: `1.2.3` is not an IP address",
    );
    check(
        &with_spec("ports:\n  - 8080:0"),
        "8:7: spec.ports[0]: invalid port `8080:0`: `0` is not a port number from 1 to 65535",
    );
    check(
        &with_spec("ports:\n  - containerPort: 80\n    protocol: icmp"),
        "9:17: spec.ports[0].protocol: unknown variant `icmp`, expected one of `tcp`, `udp`, `sctp`",
    );
    check(
        &with_spec("ports:\n  - hostPort: 80"),
        "8:7: spec.ports[0].containerPort: missing required field `containerPort`",
    );
    check(
        &with_spec("ports:\n  - 8080:80\n  - 8080:81"),
        "9:7: spec.ports[1].hostPort: host port 8080 is published twice",
    );
    check(
        &with_spec("ports:\n  - containerPort: 80\n    hostIP: 127.0.0.1"),
        "9:7: spec.ports[0].hostIP: unknown field `hostIP`, did you mean `hostIp`?",
    );
}

#[test]
fn mounts() {
    check(
        &with_spec("mounts:\n  - type: bind\n    source: data\n    target: /data"),
        "9:15: spec.mounts[0].source: `data` is not an absolute path",
    );
    check(
        &with_spec("mounts:\n  - ./data:/data"),
        "8:7: spec.mounts[0].source: `./data` is not an absolute path",
    );
    check(
        &with_spec("mounts:\n  - type: tmpfs\n    source: x\n    target: /tmp"),
        "9:15: spec.mounts[0].source: a tmpfs mount has no source",
    );
    check(&with_spec("mounts:\n  - type: volume\n    source: 'bad/name'\n    target: /data"), "9:15: spec.mounts[0].source: `bad/name` is not a valid volume name: use letters, digits, `_`, `.` and `-`");
    check(
        &with_spec("mounts:\n  - data:relative"),
        "8:7: spec.mounts[0].target: `relative` is not an absolute path",
    );
    check(
        &with_spec("mounts:\n  - a:/x:rx"),
        "8:7: spec.mounts[0]: invalid mount `a:/x:rx`: mode `rx` is not `ro` or `rw`",
    );
    check(
        &with_spec("mounts:\n  - type: nfs\n    target: /x"),
        "8:13: spec.mounts[0].type: unknown variant `nfs`, expected one of `bind`, `volume`, `tmpfs`",
    );
    check(
        &with_spec("mounts:\n  - type: bind\n    target: /x"),
        "8:7: spec.mounts[0].source: a bind mount needs a source path",
    );
    check(&with_spec("mounts:\n  - a:/x\n  - b:/x"), "9:7: spec.mounts[1].target: `/x` is mounted twice");
}

#[test]
fn networks_and_restart() {
    check(
        &with_spec("networks:\n  - name: back\n  - name: back"),
        "9:13: spec.networks[1].name: network `back` is listed twice",
    );
    check(
        &with_spec("networks:\n  - name: back\n    ipv4Address: 10.0.0.300"),
        "9:20: spec.networks[0].ipv4Address: invalid IPv4 address syntax",
    );
    check(&with_spec("networks:\n  - name: back\n    aliases: [ok, 'not ok']"), "9:21: spec.networks[0].aliases[1]: `not ok` is not a valid alias: use letters, digits and `-`, not at the start or end of a part");
    check(
        &with_spec("networks: back"),
        "7:13: spec.networks: invalid type: string \"back\", expected a sequence",
    );
    check(&with_spec("restartPolicy: sometimes"), "7:18: spec.restartPolicy: invalid restart policy `sometimes`: expected `no`, `always`, `unless-stopped` or `on-failure[:N]`");
    check(
        &with_spec("restartPolicy:\n  name: always\n  maximumRetryCount: 3"),
        "9:24: spec.restartPolicy.maximumRetryCount: a retry count is only allowed with `on-failure`",
    );
    check(
        &with_spec("restartPolicy: on-failure:x"),
        "7:18: spec.restartPolicy: invalid restart policy `on-failure:x`: `x` is not a retry count",
    );
}

/// `with_spec`, followed by the specs `db` and `cache` that links and network modes can name.
fn with_spec_and_targets(spec_lines: &str) -> String {
    let target = |name: &str| {
        format!("---\napiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n")
    };
    format!("{}{}{}", with_spec(spec_lines), target("db"), target("cache"))
}

#[test]
fn network_mode_and_links() {
    check(&with_spec_and_targets("networkMode: bridge\nlinks: [db, 'cache:database']"), "");
    check(&with_spec_and_targets("networkMode: container:db"), "");
    check(
        &with_spec_and_targets("networkMode: overlay"),
        "7:16: spec.networkMode: invalid network mode `overlay`: expected `bridge`, `host`, `none` or `container:NAME` (for another network, use `networks`)",
    );
    check(
        &with_spec_and_targets("networkMode: 'container:'"),
        "7:16: spec.networkMode: invalid network mode `container:`: expected `bridge`, `host`, `none` or `container:NAME` (for another network, use `networks`)",
    );
    check(
        &with_spec_and_targets("networkMode: container:Web"),
        "7:16: spec.networkMode: `Web` is not a valid spec name: use only lowercase letters, digits and `-`\n7:16: spec.networkMode: joins the network namespace of `default/Web`, which is not among the specs",
    );
    // Docker refuses these with "conflicting options"; kedge names the field instead.
    check(
        &with_spec_and_targets("networkMode: container:db\nports: ['8080:80']\nhostname: web\nnetworks:\n  - name: back"),
        "8:10: spec.ports: cannot publish ports: the container shares `db`'s network namespace (networkMode: container:db); publish them on `db`\n9:13: spec.hostname: cannot be set: the container shares `db`'s network namespace (networkMode: container:db), and its hostname\n11:5: spec.networks: cannot be combined with `networkMode: container:db`: give one or the other",
    );
    check(
        &with_spec_and_targets("networkMode: container:db\nlinks: [cache]"),
        "8:10: spec.links: cannot be used: the container shares `db`'s network namespace (networkMode: container:db)",
    );
    check(
        &with_spec_and_targets("networkMode: host\nports: ['80']\nlinks: [db]"),
        "8:10: spec.ports: cannot publish ports with `networkMode: host`: the host's ports are the container's\n9:10: spec.links: cannot be used with `networkMode: host` (Docker refuses it)",
    );
    check(
        &with_spec_and_targets("networkMode: none\nnetworks:\n  - name: back"),
        "9:5: spec.networks: cannot be combined with `networkMode: none`: give one or the other",
    );
    check(
        &with_spec_and_targets("links: [db]\nnetworks:\n  - name: back"),
        "7:10: spec.links: links only work on the default bridge: on `networks`, containers reach each other by name (add `aliases` for other names)",
    );
    check(
        &with_spec_and_targets("links: ['db:a:b']"),
        "7:11: spec.links[0]: invalid link `db:a:b`: expected `NAME` or `NAME:ALIAS`",
    );
    check(
        &with_spec_and_targets("links: ['db:not ok', DB]"),
        "7:11: spec.links[0]: `not ok` is not a valid alias: use letters, digits and `-`, not at the start or end of a part\n7:24: spec.links[1]: `DB` is not a valid spec name: use only lowercase letters, digits and `-`\n7:24: spec.links[1]: links to `default/DB`, which is not among the specs",
    );
    check(
        &with_spec_and_targets("links: [db, {name: cache, alias: db}]"),
        "7:15: spec.links[1]: `db` is linked twice",
    );
    check(
        &with_spec_and_targets("links:\n  - name: db\n    port: 5432"),
        "9:7: spec.links[0].port: unknown field `port`",
    );
}

#[test]
fn resources() {
    check(
        &with_spec("resources:\n  memory: 4Mi"),
        "8:13: spec.resources.memory: `4Mi` is below Docker's minimum of 6Mi",
    );
    check(&with_spec("resources:\n  memory: 512Q"), "8:13: spec.resources.memory: invalid byte size `512Q`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`");
    check(
        &with_spec("resources:\n  memory: 64Mi\n  memoryReservation: 128Mi"),
        "9:24: spec.resources.memoryReservation: `128Mi` is more than memory `64Mi`",
    );
    check(&with_spec("resources:\n  memory: 64Mi\n  memorySwap: 32Mi"), "9:17: spec.resources.memorySwap: `32Mi` is less than memory `64Mi`: it counts memory plus swap (-1 for unlimited)");
    check(
        &with_spec("resources:\n  memorySwap: -1"),
        "8:17: spec.resources.memorySwap: needs `memory` to be set too",
    );
    check(&with_spec("resources:\n  cpus: 0"), "8:11: spec.resources.cpus: must be more than 0");
    check(&with_spec("resources:\n  cpus: -1"), "8:11: spec.resources.cpus: invalid CPU count `-1`: expected a decimal number such as `1.5` or milli-CPUs such as `500m`");
    check(
        &with_spec("resources:\n  cpus: 1\n  cpuQuota: 50000"),
        "8:11: spec.resources.cpus: cannot be combined with cpuPeriod or cpuQuota (Docker refuses both)",
    );
    check(
        &with_spec("resources:\n  blkioWeight: 5"),
        "8:18: spec.resources.blkioWeight: must be from 10 to 1000, or 0 for Docker's default",
    );
    check(
        &with_spec("resources:\n  cpusetCpus: 0-x"),
        "8:17: spec.resources.cpusetCpus: `0-x` is not a list such as `0-3` or `0,2`",
    );
    check(
        &with_spec("resources:\n  cpuPeriod: 10"),
        "8:16: spec.resources.cpuPeriod: must be from 1000 to 1000000 microseconds",
    );
    check(
        &with_spec("resources:\n  pidsLimit: -5"),
        "8:16: spec.resources.pidsLimit: must be positive, or 0 or -1 for unlimited",
    );
    check(&with_spec("resources:\n  memory: 64Mi\n  mem: 1"), "9:5: spec.resources.mem: unknown field `mem`");
}

#[test]
fn healthcheck_and_lifecycle() {
    check(&with_spec("healthcheck:\n  test: [CURL, x]"), "8:11: spec.healthcheck.test: must start with CMD, CMD-SHELL or NONE (or be a string, run as CMD-SHELL)");
    check(
        &with_spec("healthcheck:\n  test: [CMD]"),
        "8:11: spec.healthcheck.test: [CMD, ...] needs a command after CMD",
    );
    check(
        &with_spec("healthcheck:\n  test: [NONE, x]"),
        "8:11: spec.healthcheck.test: [NONE] takes nothing after NONE",
    );
    check(
        &with_spec("healthcheck:\n  test: []"),
        "8:11: spec.healthcheck.test: must not be empty: use [NONE] to disable the image's health check",
    );
    check(&with_spec("healthcheck:\n  test: [CMD, 'true']\n  interval: 5"), "9:15: spec.healthcheck.interval: invalid duration `5`: expected a number with a unit such as `30s`, `1m30s` or `500ms`");
    check(
        &with_spec("healthcheck:\n  test: [CMD, 'true']\n  interval: 10us"),
        "9:15: spec.healthcheck.interval: must be at least 1ms, or 0 for Docker's default",
    );
    check(
        &with_spec("healthcheck:\n  interval: 1s"),
        "8:5: spec.healthcheck.test: missing required field `test`",
    );
    check(
        &with_spec("stopSignal: SIGFOO"),
        "7:15: spec.stopSignal: `SIGFOO` is not a signal name (such as `SIGTERM`) or number",
    );
    check(&with_spec("stopGracePeriod: ten seconds"), "7:20: spec.stopGracePeriod: invalid duration `ten seconds`: expected a number with a unit such as `30s`, `1m30s` or `500ms`");
    check(
        &with_spec("capAdd: [NET_ADMIN, NET_FLY]"),
        "7:23: spec.capAdd[1]: `NET_FLY` is not a Linux capability",
    );
    check(
        &with_spec("privileged: yes"),
        "7:15: spec.privileged: invalid type: string \"yes\", expected a boolean",
    );
    check(&with_spec("logging:\n  driver: ''"), "8:13: spec.logging.driver: must not be empty");
    check(&with_spec("postStart:\n  - command: []"), "8:16: spec.postStart[0].command: must not be empty");
    check(
        &with_spec("postStart:\n  - command: [x]\n    policy: always"),
        "9:15: spec.postStart[0].policy: unknown variant `always`, expected `once` or `ensureRunning`",
    );
    check(
        &with_spec("deletionPolicy: keep"),
        "7:19: spec.deletionPolicy: unknown variant `keep`, expected `remove` or `orphan`",
    );
    check(
        &with_spec("postStart:\n  - command: [x]\n    match: some"),
        "9:14: spec.postStart[0].match: unknown variant `some`, expected `full` or `partial`",
    );
    check(
        &with_spec("runState: paused"),
        "7:13: spec.runState: unknown variant `paused`, expected `running` or `stopped`",
    );
    check(
        &with_spec("nonRecoverableExitCodes: [1, x]"),
        "7:32: spec.nonRecoverableExitCodes[1]: invalid type: string \"x\", expected i64",
    );
}

#[test]
fn update_policy_tags_window_and_interval() {
    let registry = "updatePolicy:\n  imageCheck: registry\n";
    let cases: &[(String, &str)] = &[
        (format!("{registry}  tags: 'not a range'"), "9:11: spec.updatePolicy.tags: \"not a range\" is not a semver range: unexpected character 'n' while parsing major version number"),
        (format!("{registry}  tags:\n    semver: '^^1'"), "10:15: spec.updatePolicy.tags.semver: \"^^1\" is not a semver range: unexpected character '^' while parsing major version number"),
        (format!("{registry}  tags:\n    include: '('"), "10:16: spec.updatePolicy.tags.include: not a regex: regex parse error: ( ^ error: unclosed group"),
        (format!("{registry}  tags:\n    transform: 'no arrow'"), "10:18: spec.updatePolicy.tags.transform: \"no arrow\" is not `REGEX => REPLACEMENT` (e.g. `^v(.*)$ => $1`)"),
        (format!("{registry}  tags:\n    level: huge"), "10:14: spec.updatePolicy.tags.level: unknown variant `huge`, expected one of `major`, `minor`, `patch`"),
        ("updatePolicy:\n  imageCheck: local\n  tags: '^1'".to_owned(), "9:11: spec.updatePolicy.tags: following tags needs `imageCheck: registry` (the tags are listed there)"),
        (format!("{registry}  window: '02:00-02:00'"), "9:13: spec.updatePolicy.window: \"02:00-02:00\" is empty: start and end are the same time"),
        (format!("{registry}  window: '02:00-04:00 Europe/Paris'"), "9:13: spec.updatePolicy.window: zone \"Europe/Paris\" is not UTC or a fixed offset like +02:00 (named zones are not supported)"),
        (format!("{registry}  interval: 1m\n  checkInterval: 1m"), "9:15: spec.updatePolicy.interval: give `interval` or its older spelling `checkInterval`, not both"),
        (format!("{registry}  mode: sometimes"), "9:11: spec.updatePolicy.mode: unknown variant `sometimes`, expected `auto` or `notify`"),
    ];
    for (input, expected) in cases {
        check(&with_spec(input), expected);
    }
    let valid = format!(
        "{registry}  interval: 2s\n  tags:\n    semver: '^1'\n    level: minor\n    include: '^v'\n    transform: '^v(.*)$ => $1'\n  minAge: 1h\n  window: '22:00-02:00 +01:00'\n  mode: notify"
    );
    check(&with_spec(&valid), "");
}

#[test]
fn updates_and_placement() {
    check(&with_spec("updatePolicy:\n  imageCheck: remote"), "8:17: spec.updatePolicy.imageCheck: unknown variant `remote`, expected one of `none`, `local`, `registry`");
    check(
        &with_spec("updatePolicy:\n  checkInterval: 100ms"),
        "8:20: spec.updatePolicy.checkInterval: must be at least 1s",
    );
    check(&with_spec("updatePolicy:\n  pullPolicy: IfNotPresent"), "8:17: spec.updatePolicy.pullPolicy: unknown variant `IfNotPresent`, expected one of `always`, `ifNotPresent`, `never`");
    check(&with_spec("ports: ['8080:80']\nupdateStrategy:\n  type: start-first"), "9:11: spec.updateStrategy.type: `start-first` cannot be used with published host ports: the new container could not bind them");
    check(
        &with_spec("updateStrategy:\n  healthTimeout: 0s"),
        "8:20: spec.updateStrategy.healthTimeout: must be more than 0s",
    );
    check(
        &with_spec("onUnhealthy: kill"),
        "7:16: spec.onUnhealthy: unknown variant `kill`, expected one of `restart`, `recreate`, `none`",
    );
    check(
        &with_spec("unhealthyLimit:\n  remediations: 0"),
        "8:19: spec.unhealthyLimit.remediations: must be at least 1 (use `onUnhealthy: none` for none)",
    );
    check(
        &with_spec("unhealthyLimit:\n  period: 100ms"),
        "8:13: spec.unhealthyLimit.period: must be at least 1s",
    );
    check(
        &with_spec("minReadySeconds: 3601"),
        "7:20: spec.minReadySeconds: must be between 0 and 3600 (one hour), not 3601",
    );
    check(
        &with_spec("minReadySeconds: -1"),
        "7:20: spec.minReadySeconds: must be between 0 and 3600 (one hour), not -1",
    );
    check(
        &with_spec("minReadySeconds: soon"),
        "7:20: spec.minReadySeconds: invalid type: string \"soon\", expected i64",
    );
    check(&with_spec("placement: {}"), "7:14: spec.placement: give `host`, `hostSelector` or both");
    check(&with_spec("placement:\n  host: 'no such host'"), "8:11: spec.placement.host: `no such host` is not a valid host name: use letters, digits and `-`, not at the start or end of a part");
    check(
        &with_spec("placement:\n  hostSelectr: {a: b}"),
        "8:5: spec.placement.hostSelectr: unknown field `hostSelectr`, did you mean `hostSelector`?",
    );
}

/// Rules that need several documents, and errors collected across documents.
#[test]
fn sets_of_documents() {
    let doc = |name: &str, extra: &str| {
        format!("apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n{extra}")
    };
    check(
        &format!("{}---\n{}", doc("a", "  dependsOn: [b]\n"), doc("b", "  dependsOn:\n    - name: a\n")),
        "7:15: spec.dependsOn[0]: dependency cycle: default/a -> default/b -> default/a",
    );
    check(
        &doc("a", "  dependsOn: [a]\n"),
        "7:15: spec.dependsOn[0]: dependency cycle: default/a -> default/a",
    );
    check(
        &doc("a", "  dependsOn: [ghost]\n"),
        "7:15: spec.dependsOn[0]: depends on `default/ghost`, which is not among the specs",
    );
    check(
        &format!("{}---\n{}", doc("a", ""), doc("a", "")),
        "11:9: metadata.name: duplicate spec `default/a`, first defined at t.yaml:4:9",
    );
    check(
        &doc("a", "  dependsOn: [b, b]\n"),
        "7:15: spec.dependsOn[0]: depends on `default/b`, which is not among the specs\n7:18: spec.dependsOn[1]: `b` is listed twice\n7:18: spec.dependsOn[1]: depends on `default/b`, which is not among the specs",
    );
    // Network namespaces and links are dependencies: unknown targets and cycles are reported there.
    check(
        &doc("a", "  networkMode: container:ghost\n"),
        "7:16: spec.networkMode: joins the network namespace of `default/ghost`, which is not among the specs",
    );
    check(
        &doc("a", "  dependsOn: [ghost]\n  links: [ghost, spook]\n"),
        "7:15: spec.dependsOn[0]: depends on `default/ghost`, which is not among the specs\n8:18: spec.links[1]: links to `default/spook`, which is not among the specs",
    );
    check(
        &format!("{}---\n{}", doc("a", "  networkMode: container:b\n"), doc("b", "  links: ['a:alias']\n")),
        "7:16: spec.networkMode: dependency cycle: default/a -> default/b -> default/a",
    );
    check(
        &doc("a", "  networkMode: service:a\n"),
        "7:16: spec.networkMode: dependency cycle: default/a -> default/a",
    );
    check(
        &format!(
            "{}---\n{}---\n{}",
            doc("a", "  networkMode: container:b\n"),
            doc("b", "  links: [c]\n"),
            doc("c", "")
        ),
        "",
    );
    // Errors of every document are reported, not only the first document's.
    check(
        &format!("{}---\n{}---\n{}", doc("Bad", ""), doc("b", "  stopSignal: NOPE\n"), doc("c", "  bogus: 1\n")),
        "4:9: metadata.name: `Bad` is not a valid name: use only lowercase letters, digits and `-`\n14:15: spec.stopSignal: `NOPE` is not a signal name (such as `SIGTERM`) or number\n22:3: spec.bogus: unknown field `bogus`",
    );
}

#[test]
fn json_positions() {
    check(
        "{\n  \"apiVersion\": \"kedge.io/v1\",\n  \"kind\": \"Container\",\n  \"metadata\": {\"name\": \"web\"},\n  \"spec\": {\n    \"image\": \"busybox\",\n    \"ports\": [\"80\", {\"containerPort\": 80, \"hostPort\": 0}]\n  }\n}\n",
        "7:55: spec.ports[1].hostPort: must be a port number from 1 to 65535 (leave it out for any)",
    );
    check(
        "{\"apiVersion\": \"kedge.io/v1\", \"kind\": \"Container\", \"metadata\": {\"name\": \"web\"}, \"spec\": {\"image\": 5}}",
        "1:99: spec.image: invalid type: integer `5`, expected a string",
    );
    check(
        "{\"apiVersion\": \"kedge.io/v1\",\n \"kind\": [1, 2}",
        "2:15: YAML syntax error: while parsing a flow sequence, expected ',' or ']'",
    );
}

#[test]
fn names_and_labels_that_collide_with_kedge_s_own_are_refused() {
    let named = "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: probe-kedge-old-abc\nspec:\n  image: busybox\n";
    let errors = errors_of(named);
    assert!(errors.contains("metadata.name") && errors.contains("-kedge-old-"), "{errors}");
    let errors = errors_of(&named.replace("kedge-old", "kedge-new"));
    assert!(errors.contains("-kedge-new-"), "{errors}");
    let errors = errors_of(&with_spec("labels:\n  io.kedge.managed-by: kedge"));
    assert!(errors.contains("spec.labels.io.kedge.managed-by") && errors.contains("io.kedge."), "{errors}");
    let errors = errors_of(&with_spec("labels:\n  io.kedge.upgrade-helper: h1"));
    assert!(errors.contains("io.kedge.upgrade-helper"), "{errors}");
    // The tests' own label stays allowed, and so do names that merely mention kedge.
    check(&with_spec("labels:\n  io.kedge.test: run1"), "");
    check(&named.replace("probe-kedge-old-abc", "kedge-oldtimer"), "");
}

#[test]
fn isolation_fields() {
    check(
        &with_spec(
            "pidMode: container:db\nipcMode: shared\ndevices: [dev/fuse, '/dev/sda:/dev/xvda:rx']\n\
             securityOpt: ['seccomp=/etc/profile.json', privileged]\nsysctls:\n  'net ipv4': 1",
        ),
        "7:12: spec.pidMode: `container:db` is not one of host, private\n\
         8:12: spec.ipcMode: `shared` is not one of host, private, shareable, none\n\
         9:13: spec.devices[0]: the host path `dev/fuse` must be absolute\n\
         9:23: spec.devices[1]: the permissions `rx` must be a combination of `r`, `w` and `m`\n\
         10:17: spec.securityOpt[0]: `seccomp` takes `unconfined` (kedge does not read seccomp profile files; without the option Docker's default profile applies)\n\
         10:46: spec.securityOpt[1]: `privileged` is not a Docker security option (expected no-new-privileges, seccomp, apparmor, label or writable-cgroups)\n\
         12:5: spec.sysctls.net ipv4: `net ipv4` is not a sysctl name (such as `net.ipv4.ip_unprivileged_port_start`)",
    );
    check(
        &with_spec(
            "pidMode: host\nipcMode: none\ndevices: [/dev/fuse]\nsecurityOpt: [no-new-privileges, 'apparmor=unconfined']\n\
             sysctls: {net.ipv4.ip_forward: 1}",
        ),
        "",
    );
}

#[test]
fn oversized_isolation_fields_are_refused_by_place_not_echoed() {
    // A 1 MiB sysctl value, device, security option and sysctl name: one short error each, at its place.
    let huge = "x".repeat(1 << 20);
    check(
        &with_spec(&format!("sysctls:\n  net.core.somaxconn: '{huge}'")),
        "8:25: spec.sysctls.net.core.somaxconn: is 1048576 bytes long; at most 4096 are allowed",
    );
    check(
        &with_spec(&format!("devices: ['/dev/{huge}']\nsecurityOpt: ['label={huge}']")),
        "7:13: spec.devices[0]: is 1048581 bytes long; at most 4096 are allowed\n\
         8:17: spec.securityOpt[0]: is 1048582 bytes long; at most 4096 are allowed",
    );
    check(
        // YAML takes a key longer than 1024 characters only after an explicit `? `.
        &with_spec(&format!("sysctls:\n  ? net.{huge}\n  : 1")),
        "8:5: spec.sysctls: a sysctl name is 1048580 bytes long; at most 4096 are allowed",
    );
    check(&with_spec(&format!("pidMode: '{huge}'")), "7:12: spec.pidMode: is not one of host, private");
}

#[test]
fn isolation_lists_past_their_limit_are_one_error() {
    let entries = |count: usize, entry: &dyn Fn(usize) -> String| -> String {
        (0..count).map(|i| format!("  - '{}'\n", entry(i))).collect()
    };
    let devices = entries(10_000, &|i| format!("/dev/d{i}"));
    check(
        &with_spec(&format!("devices:\n{devices}")),
        "8:5: spec.devices: at most 256 entries (10000 given)",
    );
    let options = entries(100_000, &|_| "no-new-privileges".to_owned());
    check(
        &with_spec(&format!("securityOpt:\n{options}")),
        "8:5: spec.securityOpt: at most 64 entries (100000 given)",
    );
    let sysctls: String = (0..1000).map(|i| format!("  net.test.s{i}: '1'\n")).collect();
    check(&with_spec(&format!("sysctls:\n{sysctls}")), "8:5: spec.sysctls: at most 256 entries (1000 given)");
    // At the limits, every entry is accepted.
    let devices = entries(256, &|i| format!("/dev/d{i}"));
    let sysctls: String = (0..256).map(|i| format!("  net.test.s{i}: '{}'\n", "1".repeat(4096))).collect();
    check(&with_spec(&format!("devices:\n{devices}sysctls:\n{sysctls}")), "");
}

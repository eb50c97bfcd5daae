"""The candidates, the backend, and the configuration files generated for each.

Every proxy gets the same worker count, the same CPUs (workers pinned one per CPU), no logging,
and runs in the foreground. All addresses are 127.0.0.1; ports stay in 18000-18999 and
15200-15299.
"""

import json
import os
import re
import subprocess

HOST = "127.0.0.1"
BACKEND_PORT = 18000          # nginx serving /small and /64k
IPERF_PORT = 15200            # iperf3 server
SMALL_BODY = b"hello world!\n"
BIG_BODY = (b"0123456789abcdef" * 4096)   # 64 KiB

# name -> ports it listens on, and which traffic it is built for.
#   http_port: where HTTP cases (and idle) connect; tcp_port: where tcp-bulk connects.
#   h2c_port: where h2c-* cases connect (HTTP/2 with prior knowledge; ringmesh speaks it on
#   every http port, nginx needs a `listen ... http2` port without ssl, HAProxy `proto h2`).
#   modes: "http" = an HTTP proxy, "tcp" = a TCP proxy (which also tunnels HTTP on http_port),
#   "tcp-http" = only the HTTP tunnel of a TCP proxy (HTTP cases with --tcp-http, and idle).
# A candidate named "X@base" is X run from the --ringmesh-base binary (A/B in one run).
CANDIDATES = {
    "direct":       {"http_port": BACKEND_PORT, "tcp_port": IPERF_PORT, "modes": {"http", "tcp"}},
    "ringmesh":     {"http_port": 18081, "tcp_port": 15201, "modes": {"http", "tcp"},
                     "h2c_port": 18081},
    # The same ringmesh process, through its tcp route to the HTTP backend: the HTTP cases
    # (with --tcp-http) and idle measure the L4 tunnel, against haproxy-tcp and nginx-stream.
    "ringmesh-tcp": {"http_port": 18090, "tcp_port": None, "modes": {"tcp-http"}},
    "nginx-http":   {"http_port": 18082, "tcp_port": None, "modes": {"http"}, "h2c_port": 18086},
    "haproxy-http": {"http_port": 18083, "tcp_port": None, "modes": {"http"}, "h2c_port": 18087},
    "haproxy-tcp":  {"http_port": 18084, "tcp_port": 15204, "modes": {"tcp"}},
    "nginx-stream": {"http_port": 18085, "tcp_port": 15205, "modes": {"tcp"}},
    # Feature variants (issue 12), run only when named with --candidates: the same HTTP proxy
    # with an access log (buffered, flushed every 100 ms), or with five head-only middlewares
    # and nginx's equivalent directives.
    "ringmesh-log": {"http_port": 18091, "tcp_port": None, "modes": {"http"}},
    "ringmesh-mw":  {"http_port": 18092, "tcp_port": None, "modes": {"http"}},
    "nginx-log":    {"http_port": 18093, "tcp_port": None, "modes": {"http"}},
    "nginx-mw":     {"http_port": 18094, "tcp_port": None, "modes": {"http"}},
    # The L4 floor (issue 15), run only when named: bench/relay_floor.c, the least a
    # user-space relay can do (epoll, read, write; nothing else), compiled with cc.
    "floor-tcp":    {"http_port": 18095, "tcp_port": None, "modes": {"tcp-http"}},
}
VARIANTS = {"ringmesh-log", "ringmesh-mw", "nginx-log", "nginx-mw", "floor-tcp"}

# The five head-only middlewares of the "mw" variants, and nginx's equivalents.
RINGMESH_MW = [
    {"type": "request_id"},
    {"type": "headers", "request": {"set": {"X-Env": "bench"}, "remove": ["X-Debug"]},
     "response": {"add": {"X-Served-By": "ringmesh"}}},
    {"type": "ip_filter", "allow": ["127.0.0.0/8", "::1"]},
    {"type": "rate_limit", "rate": 10000000, "burst": 10000000, "key": "client_ip"},
    {"type": "cors", "origins": ["https://app.example.com"], "methods": ["GET", "POST"]},
]
NGINX_MW_HTTP = f"""    limit_req_zone $binary_remote_addr zone=bench:10m rate=10000000r/s;
    map $http_origin $cors_origin {{
        default "";
        "https://app.example.com" $http_origin;
    }}
"""
NGINX_MW_LOCATION = """            allow 127.0.0.0/8;
            allow ::1;
            deny all;
            limit_req zone=bench burst=10000000 nodelay;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;
            proxy_set_header X-Env bench;
            proxy_set_header X-Debug "";
            add_header X-Served-By ringmesh always;
            add_header Access-Control-Allow-Origin $cors_origin always;
            add_header Vary Origin always;
"""


def base_name(cand):
    """The configuration a candidate uses: "ringmesh-tcp@base" -> "ringmesh-tcp"."""
    return cand.split("@", 1)[0]


def all_ports():
    ports = {BACKEND_PORT, IPERF_PORT}
    for c in CANDIDATES.values():
        ports.update(p for p in (c["http_port"], c["tcp_port"], c.get("h2c_port")) if p)
    return sorted(ports)


def nginx_version():
    try:
        r = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", r.stderr + r.stdout)
    return tuple(int(x) for x in m.groups()) if m else None


def nginx_stream_module():
    """'load_module ...;' line for a dynamic stream module, '' if built in, None if absent."""
    try:
        r = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    info = r.stderr + r.stdout
    if "--with-stream=dynamic" not in info:
        return "" if "--with-stream" in info else None
    m = re.search(r"--modules-path=(\S+)", info)
    for d in ([m.group(1)] if m else []) + ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]:
        so = os.path.join(d, "ngx_stream_module.so")
        if os.path.exists(so):
            return f"load_module {so};"
    return None


def nginx_argv(prefix, conf):
    """nginx in the foreground with its own prefix, config and error log."""
    argv = ["nginx", "-p", prefix.rstrip("/") + "/", "-c", conf, "-g", "daemon off;"]
    v = nginx_version()
    if v and v >= (1, 19, 5):
        argv[1:1] = ["-e", os.path.join(prefix, "error.log")]
    return argv


def _affinity_masks(cpus):
    """nginx worker_cpu_affinity: one bit mask per worker, worker i on cpus[i]."""
    return " ".join("1" + "0" * c for c in cpus)


def _nginx_common(d, cpus, nofile):
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
    return f"""worker_processes {len(cpus)};
worker_cpu_affinity {_affinity_masks(cpus)};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {max(1024, min(65535, nofile - 64))};
}}
"""


def _nginx_http_common(d):
    return f"""    access_log off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    tcp_nodelay on;
"""


def write_backend(d, cpus, nofile):
    """The neutral backend: nginx serving /small (13 B) and /64k (64 KiB), keep-alive."""
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(SMALL_BODY)
    with open(os.path.join(www, "64k"), "wb") as f:
        f.write(BIG_BODY)
    for path in (d, www, os.path.join(www, "small"), os.path.join(www, "64k")):
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(_nginx_common(d, cpus, nofile) + f"""http {{
{_nginx_http_common(d)}    default_type application/octet-stream;
    sendfile on;
    open_file_cache max=16 inactive=3600s;
    open_file_cache_valid 3600s;
    server {{
        listen {HOST}:{BACKEND_PORT} backlog=4096;
        root {www};
        location = /small {{ }}
        location = /64k {{ }}
    }}
}}
""")
    return nginx_argv(d, conf)


def write_candidate(name, d, cpus, nofile, ringmesh_bin=None):
    """Write the config for candidate `name` into directory d; return the argv to run it."""
    name = base_name(name)
    c = CANDIDATES[name]
    n = len(cpus)
    if name in ("ringmesh-log", "ringmesh-mw"):
        route = {
            "name": "http", "protocol": "http", "load_balance": "round_robin",
            "backends": [{"name": "nginx", "internal_host": HOST,
                          "internal_port": str(BACKEND_PORT)}],
        }
        cfg = {"dashboard_port": "", "service_name": "bench", "workers": n, "listen_host": HOST,
               "routes": {str(c["http_port"]): route}}
        if name == "ringmesh-log":
            cfg["access_log"] = {"path": os.path.join(d, "access.log"), "format": "json"}
        else:
            route["middleware"] = RINGMESH_MW
        conf = os.path.join(d, "ringmesh.json")
        with open(conf, "w") as f:
            json.dump(cfg, f, indent=2)
        return [ringmesh_bin, "run", "--config", conf]

    if name == "floor-tcp":
        exe = os.path.join(d, "relay_floor")
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_floor.c")
        subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
        return [exe, HOST, str(c["http_port"]), HOST, str(BACKEND_PORT)]

    if name in ("nginx-log", "nginx-mw"):
        http_extra = location_extra = ""
        if name == "nginx-log":
            # nginx's closest equivalent: buffered access log, flushed every 100 ms.
            http_extra = (f"    log_format jsonlog escape=json '{{\"time\":\"$time_iso8601\","
                          f"\"client\":\"$remote_addr\",\"request\":\"$request\","
                          f"\"status\":$status,\"bytes\":$bytes_sent,\"rt\":$request_time,"
                          f"\"upstream\":\"$upstream_addr\",\"urt\":\"$upstream_header_time\"}}';\n"
                          f"    access_log {d}/access.log jsonlog buffer=64k flush=100ms;\n")
        else:
            http_extra = NGINX_MW_HTTP
            location_extra = NGINX_MW_LOCATION
        conf = os.path.join(d, "nginx.conf")
        common = _nginx_http_common(d)
        if name == "nginx-log":
            common = common.replace("    access_log off;\n", "")
        with open(conf, "w") as f:
            f.write(_nginx_common(d, cpus, nofile) + f"""http {{
{common}{http_extra}    upstream backend {{
        server {HOST}:{BACKEND_PORT};
        keepalive 64;
    }}
    server {{
        listen {HOST}:{c['http_port']} backlog=4096;
        location / {{
{location_extra}            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
        return nginx_argv(d, conf)

    if name in ("ringmesh", "ringmesh-tcp"):
        rt = CANDIDATES["ringmesh-tcp"]
        cfg = {
            "dashboard_host": HOST,
            "dashboard_port": "",
            "trusted_origins": [],
            "service_name": "bench",
            "workers": n,
            "listen_host": HOST,
            # h2c-small keeps 640 requests in flight, each on its own HTTP/1.1
            # backend connection: idle pools of 64 (ringmesh's default, nginx's
            # `keepalive 64`) would close and reopen most of them per request
            # (measured: 49 vs 24 us/req). Both pools get 1024; HAProxy's is unbounded.
            "upstream_keepalive": {"max_idle": 1024},
            "routes": {
                str(c["http_port"]): {
                    "name": "http", "protocol": "http", "load_balance": "round_robin",
                    "backends": [{"name": "nginx", "internal_host": HOST,
                                  "internal_port": str(BACKEND_PORT)}],
                },
                str(rt["http_port"]): {
                    "name": "http-tunnel", "protocol": "tcp",
                    "backends": [{"name": "nginx", "internal_host": HOST,
                                  "internal_port": str(BACKEND_PORT)}],
                },
                str(CANDIDATES["ringmesh"]["tcp_port"]): {
                    "name": "iperf", "protocol": "tcp",
                    "backends": [{"name": "iperf3", "internal_host": HOST,
                                  "internal_port": str(IPERF_PORT)}],
                },
            },
        }
        conf = os.path.join(d, "ringmesh.json")
        with open(conf, "w") as f:
            json.dump(cfg, f, indent=2)
        return [ringmesh_bin, "run", "--config", conf]

    if name == "nginx-http":
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_nginx_common(d, cpus, nofile) + f"""http {{
{_nginx_http_common(d)}    upstream backend {{
        server {HOST}:{BACKEND_PORT};
        keepalive 1024;
    }}
    server {{
        listen {HOST}:{c['http_port']} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    # h2c with prior knowledge (nginx 1.22: `http2` on a listen without ssl).
    server {{
        listen {HOST}:{c['h2c_port']} http2 backlog=4096;
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
        return nginx_argv(d, conf)

    if name == "nginx-stream":
        load = nginx_stream_module() or ""
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(load + "\n" + _nginx_common(d, cpus, nofile) + f"""stream {{
    server {{
        listen {HOST}:{c['tcp_port']} backlog=4096;
        proxy_pass {HOST}:{IPERF_PORT};
    }}
    server {{
        listen {HOST}:{c['http_port']} backlog=4096;
        proxy_pass {HOST}:{BACKEND_PORT};
    }}
}}
""")
        return nginx_argv(d, conf)

    if name in ("haproxy-http", "haproxy-tcp"):
        # fds per connection: 2 sockets, plus pipes for splicing (haproxy's maxpipes is
        # maxconn/4 pairs): stay under the open-file limit, which haproxy cannot raise here.
        maxconn = max(1000, min(50000, (nofile - 500) // 3))
        cpu_map = "\n".join(f"    cpu-map 1/{i + 1} {cpu}" for i, cpu in enumerate(cpus))
        head = f"""global
    nbthread {n}
{cpu_map}
    maxconn {maxconn}

defaults
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    maxconn {maxconn}
"""
        if name == "haproxy-http":
            body = f"""    mode http
    timeout http-request 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always

listen http
    bind {HOST}:{c['http_port']}
    bind {HOST}:{c['h2c_port']} proto h2
    server backend {HOST}:{BACKEND_PORT}
"""
        else:
            body = f"""    mode tcp
    option splice-auto

listen tcp
    bind {HOST}:{c['tcp_port']}
    server iperf3 {HOST}:{IPERF_PORT}

listen http_tunnel
    bind {HOST}:{c['http_port']}
    server backend {HOST}:{BACKEND_PORT}
"""
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(head + body)
        return ["haproxy", "-f", conf, "-db"]

    raise ValueError(f"no config for {name}")

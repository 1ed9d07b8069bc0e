"""What `activator import` makes of each construct of the three formats: the units written,
read back as YAML, and through activator's own loader where it matters."""

from __future__ import annotations

import textwrap

import yaml
from hypothesis import given, strategies as st

from activator.importing import command, writer
from activator.importing.writer import scalar


def translate(tmp_path, **files) -> tuple[dict, list[str]]:
    """{unit name: its YAML as loaded}, and the report lines, for files named by keyword
    (a double underscore stands for a dot, another one for @: web__service, echo_at__service)."""
    paths = []
    for name, text in files.items():
        path = tmp_path / name.replace("_at__", "@.").replace("__", ".")
        path.write_text(textwrap.dedent(text))
        paths.append(str(path))
    result = command.translate(paths)
    units = {u.name: yaml.safe_load(writer.render(u)) for u in result.units}
    report = [str(s) for s in result.skipped + [s for u in result.units for s in u.skipped]]
    return units, report


# -- supervisord

def test_supervisord_expansions(tmp_path):
    units, _ = translate(tmp_path, app__conf="""
        [supervisord]
        environment=REGION="eu-west"

        [program:app]
        command=/bin/app --region %(ENV_REGION)s --home %(ENV_HOME)s --n %(process_num)d --p 100%% ; a comment
        numprocs=3
        numprocs_start=1
        process_name=%(program_name)s-%(process_num)d
        environment=A="1,2",B=%(ENV_REGION)s # another
        """)
    app = units["app"]
    assert app["exec"] == "/bin/app --region eu-west --home $(env.HOME) --n $(instance) --p 100%"
    assert app["instances"] == 3
    assert app["environment"] == {"REGION": "eu-west", "A": "1,2", "B": "eu-west"}


def test_supervisord_priority_orders_lower_first_and_restart_words(tmp_path):
    units, report = translate(tmp_path, s__conf="""
        [program:db]
        command=db
        priority=1
        autorestart=true
        [program:web]
        command=web
        priority=50
        stopsignal=QUIT
        stopwaitsecs=20
        [program:worker]
        command=worker
        autorestart=false
        startretries=2
        """)
    assert "after" not in units["db"] and units["db"]["restart"] == "always"
    assert units["web"]["after"] == ["db"]
    assert units["web"]["kill_signal"] == "SIGQUIT" and units["web"]["timeout_stop_sec"] == 20
    assert units["worker"]["after"] == ["web"] and units["worker"]["restart"] is False  # `no`
    assert units["worker"]["start_limit_burst"] == 3
    assert report == []


def test_supervisord_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "one.conf").write_text("[program:one]\ncommand=one %(here)s\n")
    units, _ = translate(tmp_path, main__conf="[include]\nfiles = conf.d/*.conf\n")
    assert units["one"]["exec"] == f"one {tmp_path / 'conf.d'}"


def test_supervisord_fcgi_unix_socket_keeps_its_mode_and_owner(tmp_path):
    units, _ = translate(tmp_path, f__conf="""
        [fcgi-program:php]
        command=php-cgi
        socket=unix:///run/%(program_name)s.sock
        socket_owner=www-data:www-data
        """)
    php = units["php"]
    assert php["sockets"] == {"php": {"listen": "unix:/run/php.sock", "mode": "0700",
                                      "user": "www-data", "group": "www-data"}}
    assert php["exec"] == ["sh", "-c", "exec php-cgi 0<&3 3<&-"]


# -- Circus

def test_circus_reading_rules(tmp_path):
    units, report = translate(tmp_path, c__ini="""
        [DEFAULT]
        base = /srv

        [watcher:web]
        cmd = run --root %(base)s/app --tag a#b ; a comment
        cmd = ignored: the first value wins in Circus
        numprocesses = 2
        priority = 1
        working_dir = /tmp
        send_hup = true

        [watcher:late]
        cmd = sh -c 'echo $$(date) $HOME $(circus.env.name)'
        respawn = False

        [env:late]
        NAME = worker-$(circus.wid)
        """)
    web, late = units["web"], units["late"]
    assert web["exec"] == "run --root /srv/app --tag a#b"
    assert web["instances"] == 2 and web["restart"] == "always" and web["reload_signal"] == "SIGHUP"
    assert web["working_directory"] == "/tmp" and web["timeout_stop_sec"] == 30
    assert late["exec"] == "sh -c 'echo $$$$(date) $HOME worker-$(circus.wid)'"
    assert late["restart"] is False and late["after"] == ["web"]  # higher priority first
    assert any(line.endswith("option [DEFAULT]: not imported: not a section Circus reads")
               for line in report)


def test_circus_sockets_follow_the_command_that_names_them(tmp_path):
    units, report = translate(tmp_path, c__ini="""
        [watcher:web]
        cmd = server --fd $(circus.sockets.WEB)
        [socket:web]
        host = ::1
        port = 8080
        backlog = 128
        so_reuseport = true
        [socket:files]
        path = /run/files.sock
        umask = 002
        [watcher:files]
        cmd = files --fd $(circus.sockets.files)
        """)
    assert units["web"]["sockets"] == {"web": {"listen": "tcp://[::1]:8080", "backlog": 128,
                                               "reuse_port": True}}
    assert units["files"]["sockets"] == {"files": {"listen": "unix:/run/files.sock", "mode": "0775"}}
    assert report == []


# -- systemd

def test_systemd_syntax_continuations_resets_and_specifiers(tmp_path):
    units, report = translate(tmp_path, web__service="""
        [Unit]
        Description=web %n
        After=db.service network.target

        [Service]
        Environment=A=1 "B=two words"
        Environment=
        Environment=C=3
        ExecStartPre=/bin/false
        ExecStartPre=
        ExecStartPre=-/usr/bin/prepare %N
        ExecStart=/usr/bin/web \\
        # a comment inside the command
          --port 80 --c $C --d ${D}
        Restart=on-abnormal
        TimeoutStopSec=5
        """, db__service="""
        [Unit]
        Before=web.service
        [Service]
        Type=notify
        ExecStart=/usr/bin/db
        WatchdogSec=30s
        """)
    web = units["web"]
    assert web["description"] == "web web.service"
    assert web["exec"] == "/usr/bin/web --port 80 --c 3 --d $(env.D)"
    assert web["environment"] == {"C": "3"}
    assert web["restart"] == "on-abnormal" and web["timeout_stop_sec"] == 5
    assert web["wants"] == ["web-pre"] and web["after"] == ["db"]
    assert units["web-pre"]["exec"] == "/usr/bin/prepare web"
    assert units["web-pre"]["type"] == "oneshot"
    assert units["db"]["type"] == "notify" and units["db"]["watchdog_sec"] == "30s"
    assert units["db"]["restart"] is False  # `restart: no`, systemd's default
    assert any("After=network.target: not imported" in line for line in report)


def test_systemd_template_service_uses_the_instance_number(tmp_path):
    units, _ = translate(tmp_path, worker_at__service="""
        [Service]
        ExecStart=/usr/bin/worker --id %i
        """)
    assert units["worker"]["exec"] == "/usr/bin/worker --id $(instance)"


def test_systemd_socket_by_service_name_and_options(tmp_path):
    units, _ = translate(tmp_path, api__socket="""
        [Socket]
        ListenStream=[::1]:8080
        ListenDatagram=127.0.0.1:53
        Service=backend.service
        NoDelay=yes
        """, backend__service="""
        [Service]
        ExecStart=/usr/bin/backend
        [Install]
        WantedBy=multi-user.target
        """)
    backend = units["backend"]
    assert backend["sockets"] == {"api": {"listen": "tcp://[::1]:8080", "nodelay": True},
                                  "api-2": {"listen": "udp://127.0.0.1:53"}}
    assert "start" not in backend  # enabled at boot: eager


def test_detection_reads_the_content_not_the_name(tmp_path):
    units, _ = translate(tmp_path, notes__txt="[program:x]\ncommand=x\n")
    assert units["x"]["exec"] == "x"


# -- the writer

@given(st.text(max_size=40))
def test_every_text_is_written_so_that_yaml_reads_it_back(text):
    assert yaml.safe_load(f"key: {scalar(text)}")["key"] == text


def test_written_units_load_with_activators_loader(tmp_path, monkeypatch):
    from activator import units as loader

    (tmp_path / "bin").mkdir()
    for program in ("server", "worker"):
        (tmp_path / "bin" / program).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / program).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    (tmp_path / "c.ini").write_text(textwrap.dedent("""
        [watcher:web]
        cmd = server --fd $(circus.sockets.web) --name "a: b #c" --x yes
        numprocesses = 2
        [socket:web]
        host = 127.0.0.1
        port = 0
        [watcher:worker]
        cmd = worker $(circus.wid)
        priority = -1
        """))
    out = tmp_path / "units"
    command.write(command.translate([str(tmp_path / "c.ini")]).units, str(out), force=False)
    model = loader.load([str(out)], dict(__import__("os").environ), True)
    web = model.units["web"]
    assert [str(t) for t in web.exec] == ["server", "--fd", "$(sockets.web)", "--name", "a: b #c", "--x", "yes"]
    assert web.instances == 2 and model.units["worker"].after == ("web",)


def test_supervisord_reads_indented_options_and_continuations_as_python_does(tmp_path):
    units, _ = translate(tmp_path, s__conf="""
        [program:a]
          command=/bin/a
            --flag ; continued: deeper than its option
          user=nobody
        """)
    assert units["a"]["exec"] == "/bin/a\n--flag"
    assert units["a"]["user"] == "nobody"


def test_fcgi_command_reaches_sh_as_the_words_supervisord_split(tmp_path):
    units, _ = translate(tmp_path, f__conf="""
        [fcgi-program:app]
        command=/bin/app "two words" $HOME --n=%(process_num)d
        socket=tcp://127.0.0.1:9000
        numprocs=2
        numprocs_start=1
        """)
    assert units["app"]["exec"] == ["sh", "-c", "exec /bin/app 'two words' '$HOME' '--n=$(instance)' 0<&3 3<&-"]


def test_systemd_units_debian_ships_that_broke_a_first_translation(tmp_path):
    units, report = translate(tmp_path, user_at__service="""
        [Service]
        User=%i
        Environment="ARGS=--id %i"
        ExecStart=/bin/sh -c "run `echo '${ARGS}'`"
        """, exit__service="""
        [Unit]
        SuccessAction=exit
        """, rfkill__socket="""
        [Socket]
        ListenSpecial=/dev/rfkill
        """, rfkill__service="""
        [Service]
        Type=forking
        ExecStart=/usr/bin/rfkill
        """)
    user = units["user"]
    assert "user" not in user  # %i cannot be a user name: reported, not written
    assert user["exec"] == ["/bin/sh", "-c", "run `echo '--id $(instance)'`"]
    assert set(units) == {"user", "rfkill"}  # exit.service runs nothing
    assert "start" not in units["rfkill"] and "type" not in units["rfkill"]
    assert any("exit.service: not imported: no ExecStart=" in line for line in report)
    assert any("User: not imported: %i is the instance" in line for line in report)
    assert any("Type: not imported: Type=forking" in line for line in report)


def test_a_masked_unit_is_reported_not_read(tmp_path):
    (tmp_path / "masked.service").symlink_to("/dev/null")
    (tmp_path / "a.service").write_text("[Service]\nExecStart=/bin/a\n")
    result = command.translate([str(tmp_path / "masked.service"), str(tmp_path / "a.service")])
    assert [u.name for u in result.units] == ["a"]
    assert "masked" in str(result.skipped[0])


def test_a_service_that_runs_nothing_is_no_dependency(tmp_path):
    units, report = translate(tmp_path, stop__service="[Unit]\nSuccessAction=exit\n",
                              app__service="[Unit]\nRequires=stop.service\n[Service]\nExecStart=/bin/app\n")
    assert set(units) == {"app"} and "requires" not in units["app"]
    assert any("Requires=stop.service: not imported" in line for line in report)


def test_a_circus_socket_shared_by_two_watchers_is_bound_by_each(tmp_path):
    units, report = translate(tmp_path, c__ini="""
        [watcher:a]
        cmd = server --fd $(circus.sockets.web)
        [watcher:b]
        cmd = server --fd $(circus.sockets.web)
        [socket:web]
        host = 127.0.0.1
        port = 8080
        """)
    assert units["a"]["sockets"] == {"web": {"listen": "tcp://127.0.0.1:8080", "reuse_port": True}}
    assert units["b"]["sockets"] == {"web-b": {"listen": "tcp://127.0.0.1:8080", "reuse_port": True}}
    assert units["b"]["exec"] == "server --fd $(sockets.web-b)"
    assert report == []


def test_accept_keeps_the_first_listen_line(tmp_path):
    units, report = translate(tmp_path, echo__socket="""
        [Socket]
        ListenStream=127.0.0.1:7
        ListenStream=/run/echo.sock
        Accept=yes
        MaxConnections=10
        """, echo_at__service="[Service]\nExecStart=/bin/cat\nStandardInput=socket\n")
    assert units["echo"]["sockets"] == {"echo": {"listen": "tcp://127.0.0.1:7", "accept": True,
                                                 "max_connections": 10}}
    assert any("ListenStream=/run/echo.sock: not imported: Accept=yes" in line for line in report)

# Shared by the Redis benches (sourced, not run): the requests they send.
# BROWSER holds wrk's -H flags for Chromium 156's same-origin fetch(), for
# both the `api` request and the login; write_login_script DIR writes
# DIR/login.lua, the form login POST (one user, one password) wrk sends.

BROWSER=(
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
    -H 'sec-ch-ua: "Not:A-Brand";v="8", "Chromium";v="156"'
    -H 'sec-ch-ua-mobile: ?0'
    -H 'sec-ch-ua-platform: "Linux"'
    -H 'Accept-Language: en-US'
    -H 'Accept: */*'
    -H 'Sec-Fetch-Site: same-origin'
    -H 'Sec-Fetch-Mode: cors'
    -H 'Sec-Fetch-Dest: empty'
)

write_login_script() {
    cat >"$1/login.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "username=alice&password=right"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF
}

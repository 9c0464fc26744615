-- Every request is a POST of a 1 MiB body (wrk adds the Content-Length).
wrk.method = "POST"
wrk.body = string.rep("x", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"

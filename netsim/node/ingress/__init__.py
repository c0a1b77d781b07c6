"""L7 proxies: ingress-nginx controllers and Gateway API gateways, served by a real nginx per proxy pod.

routes.py is the contract between the parts: ingress.py and gateway.py translate API objects
into a ProxyConfig, nginx.py renders one into an nginx configuration, match.py answers which
server and location take a request (``netsim ingress explain``), controller.py runs nginx in
the proxy pods' namespaces."""

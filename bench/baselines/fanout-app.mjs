// The bench's wsdrain app (`--app`): any wsdrain.v1 client may subscribe to any topic (no
// canSubscribe hook: yes); only a client that connected with `?role=publisher` may publish.
// Publications go out as wsdrain publishes them: framed once per worker, written corked.
import { createApp } from 'wsdrain';

export default createApp({
  upgrade(req) {
    return { publisher: req.query.get('role') === 'publisher' };
  },
  canPublish(conn) {
    return conn.context.publisher === true;
  },
});

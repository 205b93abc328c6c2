// zasync dashboard: refresh the counts of the overview from /api/overview
// without reloading the page.  Elements carrying data-count="queue:NAME:KEY"
// or data-count="total:KEY" get the new numbers.
(function () {
  'use strict';
  var body = document.body;
  var base = body.getAttribute('data-base') || '';
  var interval = parseInt(body.getAttribute('data-refresh') || '0', 10);
  if (!interval || !window.fetch) {
    return;
  }
  function set(key, value) {
    var nodes = document.querySelectorAll('[data-count="' + key + '"]');
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = String(value);
    }
  }
  function refresh() {
    fetch(base + '/api/overview', {credentials: 'same-origin',
                                   headers: {'Accept': 'application/json'}})
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.json();
      })
      .then(function (data) {
        data.queues.forEach(function (queue) {
          ['pending', 'due_later', 'held', 'active', 'completed'].forEach(
            function (key) { set('queue:' + queue.name + ':' + key, queue[key]); });
        });
        Object.keys(data.totals).forEach(function (key) {
          set('total:' + key, data.totals[key]);
        });
        set('time', data.time);
        body.setAttribute('data-refreshed', data.time);
      })
      .catch(function () { /* try again at the next tick */ });
  }
  window.setInterval(refresh, interval * 1000);
}());

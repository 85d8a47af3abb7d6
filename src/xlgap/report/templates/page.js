(function(){
/* Sort a table by a click on a column header: numbers as numbers, again to reverse. */
function key(td){var s=td.getAttribute('data-sort');var t=s!==null?s:td.textContent.trim();
var n=parseFloat(t);return isNaN(n)||!/^[-+]?[0-9.]/.test(t)?{s:t.toLowerCase()}:{n:n};}
document.querySelectorAll('table.sortable').forEach(function(tb){
 tb.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  var body=tb.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  var asc=!th.classList.contains('asc');
  tb.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');
  rows.sort(function(a,b){var x=key(a.cells[i]||a),y=key(b.cells[i]||b),r;
   if(x.n!==undefined&&y.n!==undefined)r=x.n-y.n;else if(x.n!==undefined)r=-1;
   else if(y.n!==undefined)r=1;else r=x.s<y.s?-1:x.s>y.s?1:0;return asc?r:-r;});
  rows.forEach(function(r){body.appendChild(r);});});});});
/* Download a result file's JSON, embedded in the page (no server). */
document.querySelectorAll('button.dl').forEach(function(b){b.addEventListener('click',
 function(){var s=b.nextElementSibling;var blob=new Blob([s.textContent],{type:
 'application/json'});var a=document.createElement('a');a.href=URL.createObjectURL(blob);
 a.download=b.getAttribute('data-name');document.body.appendChild(a);a.click();a.remove();});});
/* A table wider than its box scrolls inside it: say so above it, as a hint. */
function hints(){document.querySelectorAll('.tablewrap').forEach(function(w){
 var t=w.querySelector('table'),old=w.previousElementSibling;
 var over=w.scrollWidth>w.clientWidth+1,has=old&&old.classList.contains('scrollhint');
 if(over&&!has){var h=document.createElement('div');h.className='scrollhint';
  h.textContent='wider than the page: scroll sideways in the table for all '+
  t.rows[0].cells.length+' columns \u2192';w.parentNode.insertBefore(h,w);}
 else if(!over&&has)old.remove();});}
hints();window.addEventListener('resize',hints);
document.addEventListener('toggle',hints,true);
/* Self-check, written on <html data-...> where a headless browser's DOM dump shows it:
   every image decoded, every chart has something drawn, no script errors. */
function check(){var imgs=document.querySelectorAll('img.png'),bad=[];
 imgs.forEach(function(im){if(!im.complete||!im.naturalWidth){im.classList.add('broken');
 bad.push(im.alt);}});
 var svgs=document.querySelectorAll('svg.chart');
 svgs.forEach(function(s){var box=s.getBoundingClientRect();
  if(!s.querySelector('path,use,text')||!box.width)bad.push(s.parentNode.getAttribute(
  'data-figure'));});
 var d=document.documentElement.dataset;d.figures=imgs.length+svgs.length;
 d.brokenFigures=bad.join(' | ');
 d.pageWidth=document.documentElement.scrollWidth;d.errors=window.xlgapErrors.join(' | ');d.reportReady='1';}
if(document.readyState==='complete')check();else window.addEventListener('load',check);
})();

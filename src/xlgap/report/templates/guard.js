window.xlgapErrors=[];window.addEventListener('error',function(e){
window.xlgapErrors.push(String(e.message||e));});
(function(){var c=console.error;console.error=function(){window.xlgapErrors.push(
Array.prototype.join.call(arguments,' '));return c.apply(console,arguments);};})();

;;; emacs_driver.el --- emacs -Q --batch drives torch-lsp through eglot and editors/emacs/torch-lsp.el  -*- lexical-binding: t; -*-
;; Writes what the editor saw to $TORCH_LSP_RESULT (JSON); test_emacs.py asserts on it.

(require 'json)
(dolist (dir (file-expand-wildcards "/usr/share/emacs/site-lisp/elpa/*"))
  (add-to-list 'load-path dir))
(add-to-list 'load-path (expand-file-name "editors/emacs" (getenv "TORCH_LSP_ROOT")))
(require 'eglot)
(require 'torch-lsp)

(setq torch-lsp-server-command (append (json-read-from-string (getenv "TORCH_LSP_SERVER")) nil)
      ;; Training runs go where the test says (TORCH_LSP_RUNS_DIR), never into the checkout.
      torch-lsp-settings (append '(:debounceMs 50)
                                 (when (getenv "TORCH_LSP_RUNS_DIR")
                                   (list :training (list :runsDir (getenv "TORCH_LSP_RUNS_DIR")))))
      eglot-sync-connect 30)

(defvar driver-result nil "Alist written as JSON at the end.")
(defun driver-record (key value) (push (cons key value) driver-result))

(defun driver-finish (status)
  (with-temp-file (getenv "TORCH_LSP_RESULT")
    (insert (json-encode (or driver-result '((empty . t))))))
  (kill-emacs status))

(defun driver-wait (seconds what predicate)
  (let ((deadline (+ (float-time) seconds)))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (unless (funcall predicate) (error "timed out waiting for %s" what))))

(defun driver-tl101 ()
  (cl-remove-if-not (lambda (d) (string-match-p "\\[TL101\\]" (flymake-diagnostic-text d)))
                    (flymake-diagnostics)))

(defun driver-open (file)
  (find-file file)
  (unless (derived-mode-p 'python-mode) (python-mode))
  (unless (eglot-current-server) (apply #'eglot (eglot--guess-contact)))
  (driver-wait 30 "eglot to connect" #'eglot-current-server)
  (flymake-start))

(condition-case err
    (progn
      (let ((opened-at (float-time)))
        (driver-open (getenv "TORCH_LSP_FIXTURE"))
        (driver-record 'connected_ms (* 1000 (- (float-time) opened-at)))
        (driver-wait 30 "TL101" #'driver-tl101)
        (driver-record 'diagnostics_ms (* 1000 (- (float-time) opened-at))))
      (driver-record 'server_command (vconcat (process-command (jsonrpc--process (eglot-current-server)))))
      (driver-wait 30 "TL101" #'driver-tl101)
      (driver-record 'diagnostics
                     (vconcat (mapcar (lambda (d) `((line . ,(1- (line-number-at-pos (flymake-diagnostic-beg d))))
                                                    (text . ,(flymake-diagnostic-text d))
                                                    (region . ,(buffer-substring-no-properties (flymake-diagnostic-beg d) (flymake-diagnostic-end d)))))
                                      (flymake-diagnostics))))
      ;; Quick fix: the code actions eglot itself requests at the diagnostic, then its own edit applier.
      (let* ((d (car (driver-tl101)))
             (actions (eglot-code-actions (flymake-diagnostic-beg d) (flymake-diagnostic-end d) "quickfix"))
             (fix (cl-find-if (lambda (a) (eq (plist-get a :isPreferred) t)) actions)))
        (driver-record 'actions (vconcat (mapcar (lambda (a) (plist-get a :title)) actions)))
        (unless fix (error "no preferred quick fix"))
        (eglot--apply-workspace-edit (plist-get fix :edit))
        (driver-record 'fixed_text (buffer-substring-no-properties (point-min) (point-max)))
        ;; eglot sends didChange from an idle timer, and batch Emacs is never idle.
        (eglot--signal-textDocument/didChange)
        (driver-wait 30 "TL101 to disappear" (lambda () (progn (flymake-start) (null (driver-tl101))))))
      (let ((info (torch-lsp-execute "torch-lsp.serverInfo")))
        (driver-record 'server_debounce (plist-get (plist-get info :settings) :debounceMs))
        (driver-record 'torch_imported (plist-get info :torchImported)))
      ;; M-x torch-lsp-train, then M-x torch-lsp-metrics, when the server has them.
      (let ((commands (append (plist-get (plist-get (eglot--capabilities (eglot-current-server))
                                                    :executeCommandProvider)
                                         :commands)
                              nil)))
        (driver-record 'train_offered (and (member "torch-lsp.train" commands)
                                           (member "torch-lsp.metrics" commands) t))
        (when (member "torch-lsp.train" commands)
          (driver-open (getenv "TORCH_LSP_TRAIN_SCRIPT"))
          (torch-lsp-train)
          (driver-record 'run_id torch-lsp--latest-run)
          (let (status)
            (driver-wait 90 "the run to finish"
                         (lambda ()
                           (setq status (plist-get (plist-get (torch-lsp-execute "torch-lsp.metrics"
                                                                                 (list torch-lsp--latest-run))
                                                              :summary)
                                                   :status))
                           (or (and status (not (equal status "running")))
                               ;; a user asks now and then, not in a tight loop
                               (progn (accept-process-output nil 1) nil))))
            (driver-record 'run_status status))
          (torch-lsp-metrics "")
          (driver-record 'metrics_text (with-current-buffer "*torch-lsp metrics*"
                                         (buffer-substring-no-properties (point-min) (point-max))))))
      (let ((expected (getenv "TORCH_LSP_EXPECTED_HOVER")))
        (when (and expected (not (string-empty-p expected)))
          (driver-open (getenv "TORCH_LSP_POOLED"))
          (goto-char (point-min)) (forward-line 6) (forward-char 2)
          (let ((text "") (deadline (+ (float-time) 30)))
            (while (and (not (string-search expected text)) (< (float-time) deadline))
              (let* ((hover (jsonrpc-request (eglot-current-server) :textDocument/hover
                                             (eglot--TextDocumentPositionParams)))
                     (contents (plist-get hover :contents)))
                (setq text (cond ((stringp contents) contents)
                                 ((plist-get contents :value))
                                 (t (format "%S" contents)))))
              (unless (string-search expected text) (accept-process-output nil 0.2)))
            (driver-record 'hover text))))
      (driver-finish 0))
  (error (driver-record 'error (format "%S" err))
         (driver-finish 1)))

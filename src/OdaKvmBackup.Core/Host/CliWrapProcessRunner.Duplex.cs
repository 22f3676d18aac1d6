using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

internal sealed partial class CliWrapProcessRunner : IDuplexProcessRunner
{
    public async Task<IDuplexProcess> StartDuplexAsync(string program, IReadOnlyList<string> arguments, CancellationToken ct)
    {
        _sink.Verbose("Starting: " + FormatCommandLine(program, arguments));
        var process = new CliWrapDuplexProcess();
        try
        {
            process.Start(program, arguments, ct);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            await process.DisposeAsync().ConfigureAwait(false);
            throw new BackupException(ErrorIds.ToolNotFound, BackupErrorCategory.ObjectNotFound,
                $"Cannot run '{program}': {ex.Message}.", "Install it (on Oracle Linux: the openssh-clients package) and make sure it is on PATH.", program, ex);
        }
        await process.WaitUntilPipesAreOpenAsync().ConfigureAwait(false);
        return process;
    }

    /// <summary>
    /// CliWrap pipes a stream into stdin and out of stdout through delegates that run until they return. Here each
    /// delegate hands its stream to the caller and then waits until the caller is done with it, so the caller reads
    /// and writes the streams directly, with no copy in between.
    /// </summary>
    private sealed class CliWrapDuplexProcess : IDuplexProcess
    {
        private readonly TaskCompletionSource<Stream> _input = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource<Stream> _output = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _inputDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _outputDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly StringBuilder _stderr = new();
        private CancellationTokenSource? _lifetime;
        private Task<CommandResult>? _execution;

        public Stream Input => _input.Task.Result;
        public Stream Output => _output.Task.Result;

        public string StandardError
        {
            get
            {
                lock (_stderr)
                    return _stderr.ToString();
            }
        }

        public void Start(string program, IReadOnlyList<string> arguments, CancellationToken ct)
        {
            _lifetime = CancellationTokenSource.CreateLinkedTokenSource(ct);
            _execution = Cli.Wrap(program)
                .WithArguments(arguments)
                .WithEnvironmentVariables(env => env.Set("LC_ALL", "C"))
                .WithStandardInputPipe(PipeSource.Create(async (stream, token) =>
                {
                    _input.TrySetResult(stream);
                    // Returning closes stdin. CliWrap cancels the token when the process exits: then just return.
                    await Task.WhenAny(_inputDone.Task, Task.Delay(Timeout.Infinite, token)).ConfigureAwait(false);
                }))
                .WithStandardOutputPipe(PipeTarget.Create(async (stream, _) =>
                {
                    _output.TrySetResult(stream);
                    await _outputDone.Task.ConfigureAwait(false);
                }))
                .WithStandardErrorPipe(PipeTarget.ToDelegate(line =>
                {
                    lock (_stderr)
                        _stderr.AppendLine(line);
                }))
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(_lifetime.Token);
        }

        public async Task WaitUntilPipesAreOpenAsync()
        {
            // A process that ends at once still gets its pipes; if starting failed, the execution task says why.
            var pipes = Task.WhenAll(_input.Task, _output.Task);
            if (await Task.WhenAny(pipes, _execution!).ConfigureAwait(false) != pipes)
                await _execution!.ConfigureAwait(false);
            await pipes.ConfigureAwait(false);
        }

        public async Task<int> WaitForExitAsync(CancellationToken ct)
        {
            _inputDone.TrySetResult();
            _outputDone.TrySetResult();
            var result = await _execution!.WaitAsync(ct).ConfigureAwait(false);
            return result.ExitCode;
        }

        public async ValueTask DisposeAsync()
        {
            _inputDone.TrySetResult();
            _outputDone.TrySetResult();
            if (_execution is not null)
            {
                if (!_execution.IsCompleted)
                    await _lifetime!.CancelAsync().ConfigureAwait(false);
                try
                {
                    await _execution.ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Killed, as asked.
                }
            }
            _lifetime?.Dispose();
        }
    }
}

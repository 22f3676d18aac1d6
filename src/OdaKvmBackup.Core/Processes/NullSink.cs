using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Processes;

/// <summary>A sink that drops everything, for callers that show nothing.</summary>
public sealed class NullSink : IOperationSink
{
    public static readonly NullSink Instance = new();
    public void Verbose(string message) { }
    public void Warning(string message) { }
    public void Progress(ProgressUpdate update) { }
}

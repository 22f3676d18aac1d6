using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>A sink that drops everything, for callers that show nothing.</summary>
internal sealed class NullSink : IOperationSink
{
    public static readonly NullSink Instance = new();
    public void Verbose(string message) { }
    public void Warning(string message) { }
    public void Progress(ProgressUpdate update) { }
}

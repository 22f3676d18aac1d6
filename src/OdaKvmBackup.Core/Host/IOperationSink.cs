using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>Receives what an operation wants the user to see; the cmdlet shows it on the pipeline thread.</summary>
internal interface IOperationSink
{
    void Verbose(string message);
    void Warning(string message);
    void Progress(ProgressUpdate update);
}

/// <summary>One progress report: an activity (one per domain) with a child per disk.</summary>
internal sealed record ProgressUpdate(int Id, int? ParentId, string Activity, string Status, int PercentComplete, bool Completed = false);

package dev.vigil.sql;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Optional;
import java.util.Properties;

import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.functions.FunctionDefinition;
import org.apache.flink.table.functions.python.PythonEnv;
import org.apache.flink.table.functions.python.PythonFunctionKind;
import org.apache.flink.table.functions.python.PythonScalarFunction;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.inference.ArgumentCount;
import org.apache.flink.table.types.inference.CallContext;
import org.apache.flink.table.types.inference.ConstantArgumentCount;
import org.apache.flink.table.types.inference.InputTypeStrategy;
import org.apache.flink.table.types.inference.Signature;
import org.apache.flink.table.types.inference.TypeInference;
import org.apache.flink.table.types.inference.TypeStrategies;
import org.apache.flink.table.types.logical.LogicalTypeFamily;

/**
 * {@code ANOMALY('name@alias', feature, ...)}: one SQL function for every model of a session, the
 * model chosen by its first argument, a string literal (a model reference of the session).
 *
 * <p>The planner checks the call against that model's features: an unknown reference, a reference
 * that is not a literal, a wrong number of features or a non-numeric one is refused at planning
 * time with a message that names the model's features in order. At run time the pickled Python
 * function (udfs/anomaly_score.NamedModelsScore) scores with the model of that reference.
 *
 * <p>Spec resource (as for {@link NamedPythonFunction}): name, kind, deterministic, result,
 * payload, and {@code models} (tab-separated references) with {@code features.<i>} (tab-separated
 * feature names of the i-th reference).
 */
public class ModelAnomalyFunction extends PythonScalarFunction {
    private static final long serialVersionUID = 1L;

    private final String[] refs;
    private final String[][] features;
    private final String[][] types;
    private final String resultType;

    protected ModelAnomalyFunction(String id) {
        this(NamedPythonFunction.load(id));
    }

    private ModelAnomalyFunction(Properties spec) {
        super(spec.getProperty("name"), Base64.getDecoder().decode(spec.getProperty("payload")),
                PythonFunctionKind.valueOf(spec.getProperty("kind")),
                Boolean.parseBoolean(spec.getProperty("deterministic")), false,
                new PythonEnv(PythonEnv.ExecType.PROCESS));
        this.refs = split(spec.getProperty("models"));
        this.features = new String[refs.length][];
        this.types = new String[refs.length][];
        for (int i = 0; i < refs.length; i++) {
            features[i] = split(spec.getProperty("features." + i));
            types[i] = split(spec.getProperty("types." + i));
        }
        this.resultType = spec.getProperty("result");
    }

    private static String[] split(String text) {
        return text == null || text.isEmpty() ? new String[0] : text.split("\t", -1);
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory factory) {
        return TypeInference.newBuilder()
                .inputTypeStrategy(new ModelArguments())
                .outputTypeStrategy(TypeStrategies.explicit(factory.createDataType(resultType)))
                .build();
    }

    /** The declared SQL type of a model's argument: DOUBLE for a sensor, a TIMESTAMP type for a time. */
    private String type(int model, int argument) {
        return argument < types[model].length ? types[model][argument] : "DOUBLE";
    }

    private String call(int model) {
        return "ANOMALY('" + refs[model] + "', " + String.join(", ", features[model]) + ")";
    }

    private String models() {
        List<String> out = new ArrayList<>();
        for (String ref : refs) {
            out.add("'" + ref + "'");
        }
        return String.join(", ", out);
    }

    /** The model reference (a literal of the session's references), then that model's features. */
    private final class ModelArguments implements InputTypeStrategy {
        @Override
        public ArgumentCount getArgumentCount() {
            return ConstantArgumentCount.from(1);
        }

        @Override
        public Optional<List<DataType>> inferInputTypes(CallContext context, boolean throwOnFailure) {
            List<DataType> given = context.getArgumentDataTypes();
            if (!context.isArgumentLiteral(0) || context.isArgumentNull(0)) {
                throw context.newValidationError("ANOMALY's first argument names the model, as a string literal: "
                        + "one of %s", models());
            }
            String ref = context.getArgumentValue(0, String.class).orElse("");
            int model = Arrays.asList(refs).indexOf(ref);
            if (model < 0) {
                throw context.newValidationError("ANOMALY: no model '%s' in this session; its models are %s "
                        + "(`vigil sql --model name@alias` adds one)", ref, models());
            }
            String[] names = features[model];
            if (given.size() != names.length + 1) {
                throw context.newValidationError("ANOMALY('%s', ...) takes the model's %d features, in this "
                        + "order: %s; got %d argument(s) after the model", ref, names.length, call(model),
                        given.size() - 1);
            }
            boolean constantsOnly = true;
            List<DataType> expected = new ArrayList<>();
            expected.add(DataTypes.STRING());
            for (int i = 1; i < given.size(); i++) {
                String declared = type(model, i - 1);
                if (declared.startsWith("TIMESTAMP")) {  // a window's reading time
                    if (!given.get(i).getLogicalType().is(LogicalTypeFamily.TIMESTAMP)) {
                        throw context.newValidationError("ANOMALY('%s', ...): argument %d is %s, a reading's time; "
                                + "got %s. Expected: %s", ref, i, names[i - 1], given.get(i), call(model));
                    }
                    expected.add(context.getDataTypeFactory().createDataType(declared));
                } else {
                    if (!given.get(i).getLogicalType().is(LogicalTypeFamily.NUMERIC)) {
                        throw context.newValidationError("ANOMALY('%s', ...): argument %d is feature %s, a number; "
                                + "got %s. Expected: %s", ref, i, names[i - 1], given.get(i), call(model));
                    }
                    expected.add(DataTypes.DOUBLE());
                }
                constantsOnly &= context.isArgumentLiteral(i);
            }
            if (constantsOnly && names.length > 0) {
                throw context.newValidationError("ANOMALY is a Python function: give it at least one column, not "
                        + "constants only (a Python worker reads its arguments from the rows it is sent)");
            }
            return Optional.of(expected);
        }

        @Override
        public List<Signature> getExpectedSignatures(FunctionDefinition definition) {
            List<Signature> out = new ArrayList<>();
            for (int m = 0; m < refs.length; m++) {
                List<Signature.Argument> arguments = new ArrayList<>();
                arguments.add(Signature.Argument.of("'" + refs[m] + "'"));
                for (int i = 0; i < features[m].length; i++) {
                    arguments.add(Signature.Argument.of(features[m][i], type(m, i)));
                }
                out.add(Signature.of(arguments));
            }
            return out;
        }
    }
}
